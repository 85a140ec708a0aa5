"""The figures of a run, drawn off-screen (Agg), in the book's style."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from src.datafiles import atomic_path  # noqa: E402

MAX_POINTS = 2000  # more dots than this draw no differently, but cost seconds and gigabytes at n = 1e7


def _thin(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """At most MAX_POINTS evenly spaced entries of each array (all the same length)."""
    n = len(arrays[0])
    if n <= MAX_POINTS:
        return arrays
    keep = np.linspace(0, n - 1, MAX_POINTS).astype(int)
    return tuple(a[keep] for a in arrays)


def plot_fit(x: np.ndarray, y: np.ndarray, w: float, b: float) -> Figure:
    """The book's figure: the data as blue dots, the fitted w·x² + b as a red line."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    grid = np.linspace(x.min(), x.max(), 400)
    ax.plot(grid, w * grid**2 + b, "r-", label="predict", zorder=3)
    ax.scatter(*_thin(x, y), color="blue", marker="o", label="true")
    ax.set_xlim(x.min(), x.max())
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"y = {w:.4f}·x² + {b:.4f}")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_evaluation(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    w: float,
    b: float,
    w_star: float,
    b_star: float,
) -> Figure:
    """The fit against held-out data: both sets as points, the fitted and the optimal curve."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    grid = np.linspace(min(x_train.min(), x_test.min()), max(x_train.max(), x_test.max()), 200)
    ax.scatter(*_thin(x_train, y_train), color="blue", marker="o", s=14, label="train")
    ax.scatter(*_thin(x_test, y_test), color="orange", marker="x", s=18, label="test")
    ax.plot(grid, w * grid**2 + b, "r-", zorder=3, label=f"fit: {w:.4f}·x² + {b:.4f}")
    ax.plot(grid, w_star * grid**2 + b_star, "k--", zorder=4, label=f"least squares: {w_star:.4f}·x² + {b_star:.4f}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("fit on held-out data")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_loss(step: np.ndarray, loss: np.ndarray, optimum: float | None = None) -> Figure:
    """Training loss against step, on a log scale; with `optimum`, the least-squares loss as a line."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(step, loss, label="gradient descent")
    if optimum is not None:
        ax.axhline(optimum, color="k", linestyle="--", label=f"least-squares optimum {optimum:.6g}")
        ax.legend()
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss = 0.5·Σ(ŷ − y)²")
    ax.set_title("training loss")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def save(fig: Figure, path) -> None:
    """Write `fig` to `path` (format from its suffix) atomically, and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip("."))
    close(fig)


def close(fig: Figure) -> None:
    """Free `fig`'s memory in pyplot."""
    plt.close(fig)


# Each backend's own marker and line, so that equal values (numpy and torch agree to ~1e-15) stay visible.
BACKEND_STYLE = {
    "numpy": {"marker": "o", "linestyle": "-", "markersize": 9, "fillstyle": "none", "color": "tab:blue"},
    "torch": {"marker": "x", "linestyle": "--", "markersize": 7, "color": "tab:orange"},
}


def plot_sweep(rows: list[dict], metric: str, best: dict | None) -> Figure:
    """The sweep's objective (`metric`) against lr, one line per backend, from its table rows.

    Jobs that failed or diverged have no objective to plot: they are marked along the top,
    so they never set the axis. `best`, the best job's row, is circled.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    scored = [r for r in rows if r["status"] == "FINISHED" and np.isfinite(r["objective"])]
    for backend in sorted({r["backend"] for r in scored}):
        points = sorted((r["lr"], r["objective"]) for r in scored if r["backend"] == backend)
        ax.plot(*zip(*points, strict=True), label=backend, **BACKEND_STYLE.get(backend, {"marker": "o"}))
    if best is not None:
        label = f"best: job {best['job']} ({best['backend']}, lr={best['lr']:g})"
        ring = {"markersize": 18, "markerfacecolor": "none", "markeredgecolor": "k", "markeredgewidth": 1.5}
        ax.plot(best["lr"], best["objective"], "o", label=label, **ring)
    unscored = [r for r in rows if r not in scored]
    if unscored:  # just above the axes, in axes coordinates: they have no value to plot
        above = {"transform": ax.get_xaxis_transform(), "clip_on": False, "color": "tab:red", "markersize": 9}
        ax.plot([r["lr"] for r in unscored], [1.04] * len(unscored), "v", label=f"failed or diverged: {len(unscored)}",
                **above)  # fmt: skip
    ax.set_xscale("log")
    values = [r["objective"] for r in scored]
    if values and min(values) > 0 and max(values) / min(values) > 10:  # a log axis only where it spans decades
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric)
    ax.set_title(f"sweep: {len(rows)} jobs, {len(scored)} scored by {metric}", pad=18)
    if ax.lines:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
