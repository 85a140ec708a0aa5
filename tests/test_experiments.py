"""The experiments' numbers, against torch itself and against analytic values."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from experiments.autograd_tour import tour
from experiments.backend_parity import compare, trajectories
from experiments.jacobian import analyse
from experiments.lr_stability import sweep
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
        stream="generator", seed=0, n=100, noise=0.2, true_w=3.0, true_b=2.0,
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
    assert (tmp_path / "out" / "report.md").read_text().startswith(f"# {name}")
    pngs = list((tmp_path / "out").glob("*.png"))
    assert pngs
    client = MlflowClient(tracking_env["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.md", *(p.name for p in pngs)} <= artifacts
    numbers = {k: v for k, v in report.items() if isinstance(v, float)}
    assert numbers and all(run.data.metrics[k] == pytest.approx(v) for k, v in numbers.items())
