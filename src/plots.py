"""The figures of a run, drawn off-screen (Agg), in the book's style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def plot_fit(x: np.ndarray, y: np.ndarray, w: float, b: float) -> Figure:
    """The book's figure: the data as blue dots, the fitted w·x² + b as a red line."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(x, w * x**2 + b, "r-", label="predict", zorder=3)
    ax.scatter(x, y, color="blue", marker="o", label="true")
    ax.set_xlim(x.min(), x.max())
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"y = {w:.4f}·x² + {b:.4f}")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_loss(loss: np.ndarray) -> Figure:
    """Training loss against step, on a log scale."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(np.arange(len(loss)), loss)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss = 0.5·Σ(ŷ − y)²")
    ax.set_title("training loss")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def save(fig: Figure, path) -> None:
    fig.savefig(path, dpi=100)
    plt.close(fig)
