"""The experiments' numbers, against torch itself and against analytic values."""

import copy
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.text import Annotation
from mlflow.tracking import MlflowClient

from experiments import autograd_tour, backend_parity, jacobian, lr_stability
from experiments.autograd_tour import tour
from experiments.backend_parity import compare, trajectories
from experiments.jacobian import analyse
from experiments.lr_stability import sweep
from experiments.report import console_table, markdown
from src import plots
from src.models import quadratic
from src.problem import sample_problem
from tests.conftest import ROOT


@pytest.mark.parametrize("x_value,seed", [(2.0, 0), (-3.5, 7)])
def test_autograd_tour_matches_torch_and_the_analytic_gradients(x_value, seed):
    report = tour(x_value, seed)

    # The node table, against a graph built here.
    x = torch.tensor([x_value])
    w = torch.randn(1, requires_grad=True)
    b = torch.randn(1, requires_grad=True)
    y = w * x
    z = y + b
    for name, t in zip("xwbyz", (x, w, b, y, z), strict=True):
        node = report["nodes"][name]
        assert node["requires_grad"] == t.requires_grad and node["is_leaf"] == t.is_leaf
        assert node["grad_fn"] == (type(t.grad_fn).__name__ if t.grad_fn is not None else None)
    assert report["nodes"]["y"]["grad_fn"] == "MulBackward0" and report["nodes"]["z"]["grad_fn"] == "AddBackward0"

    # dz/dw = x, dz/db = 1; x wants no gradient; non-leaves keep none.
    grads = report["after_backward"]
    assert grads["w.grad"] == pytest.approx(x_value) and grads["b.grad"] == 1.0
    assert grads["x.grad"] is None and grads["y.grad"] is None and grads["z.grad"] is None

    assert report["second_backward_without_retain_graph"] == "RuntimeError"
    twice = report["retain_graph"]
    assert twice["w.grad twice"] == 2 * twice["w.grad once"] == pytest.approx(2 * x_value)
    assert twice["b.grad twice"] == 2 * twice["b.grad once"] == 2.0

    stops = report["stopping_and_starting"]
    assert stops["no_grad: w*x+b"]["requires_grad"] is False and stops["no_grad: w*x+b"]["grad_fn"] is None
    assert stops["z.detach()"] == {"requires_grad": False, "is_leaf": True, "grad_fn": None}
    assert stops["x.requires_grad_()"]["requires_grad"] is True
    assert stops["x.requires_grad_()"]["grad"] == pytest.approx(report["w"])  # d(w·x)/dx = w
    assert report["sum_backward_grad_is_all_ones"] is True


@pytest.mark.parametrize("x1,x2", [(2.0, 3.0), (-1.0, 0.5)])
def test_jacobian_by_rows_is_the_jacobian(x1, x2):
    report = analyse(x1, x2)
    analytic = [[2 * x1, 3.0], [2.0, 2 * x2]]
    assert report["jacobian_by_rows"] == analytic
    reference = torch.autograd.functional.jacobian(
        lambda x: torch.stack([x[0] ** 2 + 3 * x[1], x[1] ** 2 + 2 * x[0]]), torch.tensor([x1, x2], dtype=torch.float64)
    )
    assert report["jacobian_torch_functional"] == reference.tolist()
    # The book's warning: v = (1, 1) yields vᵀJ (the column sums), not J.
    assert report["backward_with_ones"] == [2 * x1 + 2, 3 + 2 * x2]
    if (x1, x2) == (2.0, 3.0):
        assert report["backward_with_ones"] == [6.0, 9.0]


def test_backend_parity_is_rounding_level():
    float64 = compare(trajectories(n=100, steps=800, lr=0.001, seed=0, dtype="float64"))
    float32 = compare(trajectories(n=100, steps=800, lr=0.001, seed=0, dtype="float32"))
    for series in ("loss", "w", "b"):
        assert float64[f"max_rel_diff_{series}"] < 1e-10
        assert float32[f"max_rel_diff_{series}"] < 1e-4
    assert float32["max_rel_diff_loss"] > float64["max_rel_diff_loss"]


def test_lr_stability_threshold_is_the_predicted_bound():
    lrs = np.linspace(0.001, 0.030, 59)
    report = sweep(n=100, seed=0, steps=2000, lrs=lrs)

    x = sample_problem(
        quadratic, stream="generator", seed=0, n=100, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="uniform", init_b="uniform", dtype="float64",
    ).x  # fmt: skip
    hessian = np.array([[np.sum(x**4), np.sum(x**2)], [np.sum(x**2), x.size]])
    bound = 2 / max(np.linalg.eigvals(hessian).real)
    assert report["predicted_bound"] == pytest.approx(bound, rel=1e-12)
    assert report["predicted_bound"] == pytest.approx(0.0178, abs=5e-4)  # as measured on the book's data

    converged = np.array(report["sweep"]["converged"])
    np.testing.assert_array_equal(converged, lrs < bound)
    assert report["bound_within_observed_bracket"]
    assert abs(report["observed_threshold"] - bound) <= report["grid_step"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["autograd_tour", "jacobian", "backend_parity", "lr_stability"])
def test_experiment_runs_and_logs_to_its_own_mlflow_experiment(name, tmp_path, tracking_env):
    done = subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=ROOT, env=tracking_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert report_md.startswith(f"# {name}")
    # The console ends with the conclusion, the table of findings, and the report's path.
    conclusion = report_md.split("**Conclusion.** ")[1].splitlines()[0]
    assert f"{name}: {conclusion}" in done.stdout
    rows = [line for line in report_md.splitlines()[6:] if line.startswith("| ")]  # after the header and rule
    names = [row[2:].split(" | ")[0].replace("\\|", "|") for row in rows]
    assert names and all(any(line.startswith(name) for line in done.stdout.splitlines()) for name in names)
    assert done.stdout.rstrip().endswith(f"report: {tmp_path / 'out' / 'report.md'}")
    pngs = list((tmp_path / "out").glob("*.png"))
    assert pngs
    client = MlflowClient(tracking_env["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.md", *(p.name for p in pngs)} <= artifacts
    numbers = {k: v for k, v in report.items() if isinstance(v, float)}
    assert numbers and all(run.data.metrics[k] == pytest.approx(v) for k, v in numbers.items())


# What a reader gets: report.md and the console table, and the figures.

LR_GRID = np.linspace(0.001, 0.030, 59)


@pytest.fixture(scope="module")
def parity_runs():
    return {dtype: trajectories(n=100, steps=800, lr=0.001, seed=0, dtype=dtype) for dtype in backend_parity.DTYPES}


def _parity_report(runs) -> dict:
    return {f"{d}_{key}": value for d in backend_parity.DTYPES for key, value in compare(runs[d]).items()}


@pytest.fixture(scope="module")
def stability_report():
    return sweep(n=100, seed=0, steps=2000, lrs=LR_GRID)


@pytest.fixture(scope="module")
def all_findings(parity_runs, stability_report):
    """Each experiment's findings from its default run, computed in this process."""
    return {
        "autograd_tour": autograd_tour.findings(tour(2.0, 0)),
        "jacobian": jacobian.findings(analyse(2.0, 3.0)),
        "backend_parity": backend_parity.findings(_parity_report(parity_runs), steps=800),
        "lr_stability": lr_stability.findings(stability_report),
    }


def _digits(number: str) -> int:
    """Significant digits written in a number such as '0.017762' or '3.2e-07'."""
    mantissa = re.split("[eE]", number)[0].replace(".", "").lstrip("0")
    return len(mantissa)


@pytest.mark.parametrize("name", ["autograd_tour", "jacobian", "backend_parity", "lr_stability"])
def test_report_md_has_short_numbers_short_cells_and_a_conclusion_that_agrees(name, all_findings):
    text = markdown(name, all_findings[name])
    assert text.startswith(f"# {name}\n")
    numbers = re.findall(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)
    assert numbers and max(_digits(n) for n in numbers) <= 7, max(numbers, key=_digits)  # was 0.018000000000000002
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    cells = [cell for row in rows for cell in re.split(r"(?<!\\)\|", row)[1:-1]]
    assert len(rows) <= 20 and all(len(cell) <= 70 and cell.count(",") <= 6 for cell in cells)  # was a 59-item cell
    [conclusion] = [line for line in text.splitlines() if line.startswith("**Conclusion.**")]
    assert "measured: " in conclusion and conclusion.endswith("; agrees.")


def test_the_lr_stability_conclusion_is_computed_from_the_sweep(stability_report):
    findings = lr_stability.findings(stability_report)
    assert f"= {stability_report['predicted_bound']:.5g};" in findings.conclusion
    assert "the largest lr that converged is 0.0175, the smallest that did not 0.018" in findings.conclusion
    assert dict(findings.rows)["converged"] == "34: lr 0.001 … 0.0175"

    doctored = copy.deepcopy(stability_report)
    doctored["sweep"]["converged"][3] = False  # lr = 0.0025, far below the bound, said not to converge
    assert lr_stability.findings(doctored).conclusion.endswith(
        "differs: not every lr below the bound converged and every lr above did not."
    )


def test_the_parity_conclusion_is_computed_from_the_differences(parity_runs):
    report = _parity_report(parity_runs)
    findings = backend_parity.findings(report, steps=800)
    worst = max(report[f"float32_max_rel_diff_{s}"] for s in backend_parity.SERIES) / np.finfo(np.float32).eps
    assert f"{worst:.2g} ε in float32" in findings.conclusion and findings.conclusion.endswith("agrees.")
    report["float64_max_rel_diff_w"] = 1e-9  # a real difference in the math, not rounding
    assert "differs: not within 100 ε (rounding) in float64" in backend_parity.findings(report, steps=800).conclusion


def test_the_jacobian_and_tour_conclusions_notice_a_wrong_result():
    report = analyse(2.0, 3.0)
    report["jacobian_by_rows"][0][0] += 1
    report["max_abs_error_vs_analytic"] = 1.0
    assert "differs: not J equal to the analytic J" in jacobian.findings(report).conclusion
    report = tour(2.0, 0)
    report["after_backward"]["w.grad"] = 3.0
    assert "differs: not w.grad = x" in autograd_tour.findings(report).conclusion


def test_the_console_table_is_aligned(all_findings):
    findings = all_findings["backend_parity"]
    lines = console_table(findings).splitlines()
    assert len(lines) == 2 + len(findings.rows)
    assert set(lines[1]) <= {"-", " "}
    for column, header in enumerate(findings.header[1:], start=1):
        start = lines[0].index(header)
        for line, row in zip(lines[2:], findings.rows, strict=True):
            assert line[start:].startswith(row[column])


def test_parity_figure_draws_the_steps_where_the_backends_agree_exactly(parity_runs):
    fig = backend_parity.plot_differences(parity_runs)
    for ax, series in zip(fig.axes, backend_parity.SERIES, strict=True):
        assert ax.get_yscale() == "linear"
        for line in ax.get_lines():
            y = line.get_ydata()
            assert len(y) == 800 and np.isfinite(y).all()  # a log axis left every exact 0 undrawn
            assert (y == 0).any() and ax.get_ylim()[0] < 0 < ax.get_ylim()[1]
        if series != "loss":
            legend = [t.get_text() for t in ax.get_legend().get_texts()]
            assert all(re.search(r"equal from step \d+ on", text) for text in legend), legend
    plots.close(fig)


def test_lr_stability_figure_has_readable_ticks_and_marks_the_diverged_runs(stability_report):
    fig = lr_stability.plot_sweep(stability_report)
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(set(labels)) == len(labels) >= 3 and max(len(label) for label in labels) <= 6, labels
    [diverged] = [line for line in ax.get_lines() if line.get_label().startswith("diverged")]
    assert len(diverged.get_xdata()) == 25 and diverged.get_transform() == ax.get_xaxis_transform()
    plots.close(fig)


def test_the_graph_figure_clips_its_arrows_at_the_boxes_so_that_the_heads_show():
    fig = autograd_tour.plot_graph(tour(2.0, 0))
    arrows = [t for t in fig.axes[0].texts if isinstance(t, Annotation)]
    assert len(arrows) == 4
    assert all(a.arrow_patch.patchA is not None and a.arrow_patch.patchB is not None for a in arrows)
    plots.close(fig)


def test_the_jacobian_figure_writes_light_digits_on_dark_cells():
    fig = jacobian.plot_jacobian(analyse(2.0, 3.0))
    colors = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colors["6"] == "white" and colors["2"] == "black"
    plots.close(fig)
