"""Hand-written NumPy gradients against torch autograd, on identical data and starting points.

`python -m experiments.backend_parity [n=100 steps=800 lr=0.001 seed=0]` trains both backends
in float32 and in float64 and reports the largest |Δ| between their trajectories of loss,
w and b (absolute, and relative to the value's size), with a plot of |Δ| against step.
"""

from __future__ import annotations

from dataclasses import dataclass

import hydra
import matplotlib.pyplot as plt
import numpy as np
from hydra.core.config_store import ConfigStore
from matplotlib.figure import Figure

from experiments.report import record
from src.backends import History, load_fit
from src.errors import clean_exit
from src.problem import sample_problem

DTYPES = ("float32", "float64")
SERIES = ("loss", "w", "b")


@dataclass
class ParityConfig:
    n: int = 100
    steps: int = 800
    lr: float = 0.001
    seed: int = 0


def trajectories(n: int, steps: int, lr: float, seed: int, dtype: str) -> dict[str, History]:
    """Both backends' histories, from the same data and the same start."""
    x, y, w0, b0 = sample_problem(
        stream="generator", seed=seed, n=n, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="normal", init_b="normal", dtype=dtype,
    )  # fmt: skip
    return {backend: load_fit(backend)(x, y, w0, b0, lr=lr, steps=steps) for backend in ("numpy", "torch")}


def compare(runs: dict[str, History]) -> dict[str, float]:
    """Largest absolute and relative |Δ| over the whole trajectory, per series."""
    out = {}
    for series in SERIES:
        a = getattr(runs["numpy"], series).astype(np.float64)
        b = getattr(runs["torch"], series).astype(np.float64)
        out[f"max_abs_diff_{series}"] = float(np.abs(a - b).max())
        out[f"max_rel_diff_{series}"] = float((np.abs(a - b) / np.abs(a)).max())
    return out


def plot_differences(runs_by_dtype: dict[str, dict[str, History]]) -> Figure:
    """|Δ| against step, per series and dtype; steps where the backends agree exactly are left blank."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharex=True)
    for ax, series in zip(axes, SERIES, strict=True):
        for dtype, runs in runs_by_dtype.items():
            diff = np.abs(getattr(runs["numpy"], series).astype(np.float64) - getattr(runs["torch"], series))
            exact = int((diff == 0).sum())
            ax.plot(np.where(diff > 0, diff, np.nan), ".", markersize=2, label=f"{dtype} ({exact} steps equal)")
        ax.set_yscale("log")
        ax.set_title(f"|Δ {series}|: numpy vs torch")
        ax.set_xlabel("step")
        ax.legend(fontsize=8, markerscale=4)
    fig.tight_layout()
    return fig


ConfigStore.instance().store(name="backend_parity", node=ParityConfig)


@hydra.main(version_base="1.3", config_path=None, config_name="backend_parity")
def main(cfg: ParityConfig) -> None:
    with clean_exit():
        runs = {dtype: trajectories(cfg.n, cfg.steps, cfg.lr, cfg.seed, dtype) for dtype in DTYPES}
        report = {f"{dtype}_{key}": value for dtype in DTYPES for key, value in compare(runs[dtype]).items()}
        figures = {"differences.png": plot_differences(runs)}
        record("backend_parity", cfg, report, figures, backend="numpy+torch")


if __name__ == "__main__":
    main()
