"""Hand-written NumPy gradients against torch autograd, on identical data and starting points.

`python -m experiments.backend_parity [n=100 steps=800 lr=0.001 seed=0]` trains both backends
in float32 and in float64 and reports the largest |Δ| between their trajectories of loss,
w and b (absolute, and relative to the value's size), and from which step on they are equal, with
a plot of |Δ| against step in units of the dtype's rounding. It prints a table of these and a
conclusion against the book.
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

from dataclasses import dataclass

import hydra
import matplotlib.pyplot as plt
import numpy as np
from hydra.core.config_store import ConfigStore
from matplotlib.figure import Figure

from experiments.report import Findings, conclude, record, significant
from src.backends import History, numpy_gd, torch_gd
from src.errors import clean_exit
from src.models import quadratic
from src.problem import sample_problem

DTYPES = ("float32", "float64")
SERIES = ("loss", "w", "b")
# Each step sums n = 100 terms, which the two backends may add in different orders; rounding can
# then differ by up to about n·ε. More than that is a difference in the math.
ROUNDING_EPS = 100
# Hollow circles around dots: where the dtypes' differences coincide (at 0, say), both still show.
DTYPE_STYLE = {
    "float32": {"marker": "o", "markersize": 4, "fillstyle": "none"},
    "float64": {"marker": ".", "markersize": 3},
}


@dataclass
class ParityConfig:
    n: int = 100
    steps: int = 800
    lr: float = 0.001
    seed: int = 0


def trajectories(n: int, steps: int, lr: float, seed: int, dtype: str) -> dict[str, History]:
    """Both backends' histories, from the same data and the same start."""
    x, y, w0, b0 = sample_problem(
        quadratic, stream="generator", seed=seed, n=n, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="normal", init_b="normal", dtype=dtype,
    )  # fmt: skip
    fits = {"numpy": numpy_gd.fit, "torch": torch_gd.fit}
    return {backend: fit(quadratic, x, y, w0, b0, lr=lr, steps=steps) for backend, fit in fits.items()}


def relative_differences(runs: dict[str, History], series: str) -> np.ndarray:
    """|numpy − torch| / |numpy| at each step of `series`, in float64; 0 where they are equal."""
    a = getattr(runs["numpy"], series).astype(np.float64)
    b = getattr(runs["torch"], series).astype(np.float64)
    diff = np.abs(a - b)
    return np.divide(diff, np.abs(a), out=np.where(diff > 0, np.inf, 0.0), where=a != 0)


def identical_from(diff: np.ndarray) -> int:
    """The first step from which every difference is 0: len(diff) when the last one is not."""
    nonzero = np.flatnonzero(diff)
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def compare(runs: dict[str, History]) -> dict[str, float]:
    """Largest absolute and relative |Δ| over the whole trajectory, per series, how many steps are
    equal, and the step from which they all are (the trajectory's length if the last one differs)."""
    out = {}
    for series in SERIES:
        a = getattr(runs["numpy"], series).astype(np.float64)
        b = getattr(runs["torch"], series).astype(np.float64)
        rel = relative_differences(runs, series)
        out[f"max_abs_diff_{series}"] = float(np.abs(a - b).max())
        out[f"max_rel_diff_{series}"] = float(rel.max())
        out[f"equal_steps_{series}"] = int(np.count_nonzero(rel == 0))
        out[f"identical_from_step_{series}"] = identical_from(rel)
    return out


def findings(report: dict, steps: int) -> Findings:
    """The parity table (one column per dtype) and its conclusion against the book, from the report."""

    def relative(d: str, series: str) -> str:
        rel = report[f"{d}_max_rel_diff_{series}"]
        return f"{significant(rel, 2)} = {significant(rel / np.finfo(d).eps, 2)} ε"

    def identical(d: str, series: str) -> str:
        start, equal = report[f"{d}_identical_from_step_{series}"], report[f"{d}_equal_steps_{series}"]
        return f"from step {start} on" if start < steps else f"never ({equal} of {steps} steps equal)"

    rows = [(f"max |Δ {s}| / |{s}|", *(relative(d, s) for d in DTYPES)) for s in SERIES]
    rows += [(f"max |Δ {s}|", *(significant(report[f"{d}_max_abs_diff_{s}"], 2) for d in DTYPES)) for s in SERIES]
    rows += [(f"{s} identical", *(identical(d, s) for d in DTYPES)) for s in SERIES]
    worst = {d: max(report[f"{d}_max_rel_diff_{s}"] for s in SERIES) / np.finfo(d).eps for d in DTYPES}
    conclusion = conclude(
        "book §2.6–2.7: hand-written NumPy gradients and torch autograd train the same w and b",
        f"over {steps} steps, loss, w and b differ by at most "
        + ", ".join(f"{significant(w, 2)} ε in {d}" for d, w in worst.items()),
        {f"within {ROUNDING_EPS} ε (rounding) in {d}": w <= ROUNDING_EPS for d, w in worst.items()},
    )
    return Findings(conclusion, ("numpy vs torch", *DTYPES), rows)


def plot_differences(runs_by_dtype: dict[str, dict[str, History]]) -> Figure:
    """|Δ| / |value| against step, in units of each dtype's ε, per series and dtype.

    On this linear axis the steps where the backends agree exactly sit at 0 (a log axis cannot
    draw them), and both dtypes share one scale; the legend says from which step on they agree.
    """
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharex=True)
    for ax, series in zip(axes, SERIES, strict=True):
        for dtype, runs in runs_by_dtype.items():
            rel = relative_differences(runs, series)
            start, steps = identical_from(rel), len(rel)
            equal = np.count_nonzero(rel == 0)
            agree = f"equal from step {start} on" if start < steps else f"equal at {equal} of {steps} steps"
            ax.plot(runs["numpy"].step, rel / np.finfo(dtype).eps, linestyle="none", label=f"{dtype}: {agree}",
                    **DTYPE_STYLE[dtype])  # fmt: skip
        low, high = ax.get_ylim()  # 0 inside, with a margin below, so that points at 0 show whole
        ax.set_ylim(low, high * 1.3)  # headroom for the legend
        ax.set_title(f"|Δ {series}|: numpy vs torch")
        ax.set_xlabel("step")
        ax.legend(fontsize=8, markerscale=2)
    axes[0].set_ylabel("|Δ| / |value|, in ε of the dtype")
    fig.tight_layout()
    return fig


ConfigStore.instance().store(name="backend_parity", node=ParityConfig)


@hydra.main(version_base="1.3", config_path=None, config_name="backend_parity")
def main(cfg: ParityConfig) -> None:
    with clean_exit():
        runs = {dtype: trajectories(cfg.n, cfg.steps, cfg.lr, cfg.seed, dtype) for dtype in DTYPES}
        report = {f"{dtype}_{key}": value for dtype in DTYPES for key, value in compare(runs[dtype]).items()}
        figures = {"differences.png": plot_differences(runs)}
        record("backend_parity", cfg, report, findings(report, cfg.steps), figures, backend="numpy+torch")


if __name__ == "__main__":
    main()
