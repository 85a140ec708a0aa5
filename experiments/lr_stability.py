"""Where gradient descent on the book's loss stops converging, predicted and observed.

The loss 0.5·Σ(w·x² + b − y)² is quadratic with constant Hessian H = [[Σx⁴, Σx²], [Σx², n]],
so gradient descent converges iff lr < 2/λ_max(H). `python -m experiments.lr_stability`
sweeps lr over an evenly spaced grid across that bound (on the default data: n=100,
seed 0), classifies each run as converging (its final loss is at the least-squares
optimum) or not, and reports the predicted bound against the observed threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import hydra
import matplotlib.pyplot as plt
import numpy as np
from hydra.core.config_store import ConfigStore
from matplotlib.figure import Figure

from experiments.report import record
from src.backends import load_fit
from src.errors import clean_exit
from src.problem import least_squares, loss, lr_bound, sample_problem


@dataclass
class StabilityConfig:
    n: int = 100
    seed: int = 0
    steps: int = 2000
    lr_min: float = 0.001
    lr_max: float = 0.030
    points: int = 59  # a grid step of 0.0005


def sweep(n: int, seed: int, steps: int, lrs: np.ndarray) -> dict:
    """Train at every lr in `lrs` and classify each run; compare with the predicted bound."""
    x, y, w0, b0 = sample_problem(
        stream="generator", seed=seed, n=n, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="uniform", init_b="uniform", dtype="float64",
    )  # fmt: skip
    bound = lr_bound(x)
    optimum = loss(x, y, *least_squares(x, y))
    fit = load_fit("numpy")
    final_losses, converged = [], []
    for lr in lrs:
        history = fit(x, y, w0, b0, lr=float(lr), steps=steps)
        final = history.loss[-1] if not history.diverged else math.inf
        final_losses.append(float(final))
        converged.append(bool(final <= optimum * (1 + 1e-6)))
    converged_lrs = [float(lr) for lr, ok in zip(lrs, converged, strict=True) if ok]
    failed_lrs = [float(lr) for lr, ok in zip(lrs, converged, strict=True) if not ok]
    largest_converged = max(converged_lrs, default=math.nan)
    smallest_failed = min(failed_lrs, default=math.nan)
    return {
        "predicted_bound": bound,
        "largest_converging_lr": largest_converged,
        "smallest_failing_lr": smallest_failed,
        "observed_threshold": (largest_converged + smallest_failed) / 2,
        "grid_step": float(lrs[1] - lrs[0]),
        "bound_within_observed_bracket": bool(largest_converged < bound <= smallest_failed),
        "optimal_loss": optimum,
        "sweep": {"lr": [float(lr) for lr in lrs], "final_loss": final_losses, "converged": converged},
    }


def plot_sweep(report: dict) -> Figure:
    lr = np.array(report["sweep"]["lr"])
    final = np.array(report["sweep"]["final_loss"])
    ok = np.array(report["sweep"]["converged"])
    shown = np.where(np.isfinite(final), final, np.nan)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lr, shown, color="0.6", zorder=1)
    ax.scatter(lr[ok], shown[ok], color="tab:green", label="converged", zorder=2)
    ax.scatter(lr[~ok], shown[~ok], color="tab:red", label="did not converge", zorder=2)
    if (~np.isfinite(final)).any():
        ax.scatter(lr[~np.isfinite(final)], np.full((~np.isfinite(final)).sum(), np.nanmax(shown)), marker="^",
                   color="tab:red", label="diverged: stopped, no final loss (shown at top)")  # fmt: skip
    ax.axvline(report["predicted_bound"], color="k", linestyle="--", label=f"2/λ_max = {report['predicted_bound']:.5f}")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final loss")
    ax.set_title("gradient descent on 0.5·Σ(w·x² + b − y)²: stable iff lr < 2/λ_max(H)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


ConfigStore.instance().store(name="lr_stability", node=StabilityConfig)


@hydra.main(version_base="1.3", config_path=None, config_name="lr_stability")
def main(cfg: StabilityConfig) -> None:
    with clean_exit():
        lrs = np.linspace(cfg.lr_min, cfg.lr_max, cfg.points)
        report = sweep(cfg.n, cfg.seed, cfg.steps, lrs)
        figures = {"final_loss_vs_lr.png": plot_sweep(report)}
        record("lr_stability", cfg, report, figures, backend="numpy")


if __name__ == "__main__":
    main()
