"""Where gradient descent on the book's loss stops converging, predicted and observed.

The loss 0.5·Σ(w·x² + b − y)² is quadratic with constant Hessian H = [[Σx⁴, Σx²], [Σx², n]],
so gradient descent converges iff lr < 2/λ_max(H). `python -m experiments.lr_stability`
sweeps lr over an evenly spaced grid across that bound (on the default data: n=100,
seed 0), classifies each run as converging (its final loss is at the least-squares
optimum) or not, and reports the predicted bound against the observed threshold: a table of
findings and a conclusion on the console and in report.md, and the final loss against lr.
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import math
from dataclasses import dataclass

import hydra
import matplotlib.pyplot as plt
import numpy as np
from hydra.core.config_store import ConfigStore
from matplotlib.figure import Figure

from experiments.report import Findings, conclude, record, significant
from src import plots
from src.backends import numpy_gd
from src.errors import clean_exit
from src.models import loss, quadratic
from src.problem import sample_problem


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
        quadratic, stream="generator", seed=seed, n=n, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="uniform", init_b="uniform", dtype="float64",
    )  # fmt: skip
    bound = quadratic.lr_bound(x)
    optimum = loss(quadratic, x, y, *quadratic.optimum(x, y))
    final_losses, converged = [], []
    for lr in lrs:
        history = numpy_gd.fit(quadratic, x, y, w0, b0, lr=float(lr), steps=steps)
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


def _lr_text(lr: float, grid_step: float) -> str:
    """An lr of the grid to the digits its step resolves, and no more: 0.018000000000000002 -> '0.018'."""
    decimals = max(0, 1 - math.floor(math.log10(grid_step)))
    return f"{round(lr, decimals):g}"


def _lr_span(lrs: np.ndarray, grid_step: float) -> str:
    """The range of `lrs`, not the list: '0.001 … 0.0175'."""
    return f"{_lr_text(lrs.min(), grid_step)} … {_lr_text(lrs.max(), grid_step)}" if lrs.size else "none"


def findings(report: dict) -> Findings:
    """The sweep's table and its conclusion against the predicted bound, from `sweep`'s report."""
    lr = np.array(report["sweep"]["lr"])
    final = np.array(report["sweep"]["final_loss"])
    ok = np.array(report["sweep"]["converged"])
    step, bound, optimum = report["grid_step"], report["predicted_bound"], report["optimal_loss"]
    diverged = int(np.count_nonzero(~np.isfinite(final)))
    gap = np.max(np.abs(final[ok] - optimum)) / optimum if ok.any() else math.nan
    low, high = report["largest_converging_lr"], report["smallest_failing_lr"]
    rows = [
        ("2/λ_max(H), predicted", significant(bound, 5)),
        ("lr grid", f"{lr.size} values, {_lr_span(lr, step)}, step {significant(step, 3)}"),
        ("converged", f"{np.count_nonzero(ok)}: lr {_lr_span(lr[ok], step)}"),
        ("did not converge", f"{np.count_nonzero(~ok)}: lr {_lr_span(lr[~ok], step)}, {diverged} of them diverged"),
        ("observed threshold", f"between {_lr_text(low, step)} and {_lr_text(high, step)}"),
        ("bound inside that bracket", "yes" if report["bound_within_observed_bracket"] else "no"),
        ("least-squares loss", significant(optimum, 6)),
        ("converged: max |final − optimum| / optimum", significant(gap, 2)),
    ]
    conclusion = conclude(
        f"theory (the loss's Hessian H): gradient descent converges iff lr < 2/λ_max(H) = {significant(bound, 5)}",
        f"the largest lr that converged is {_lr_text(low, step)}, the smallest that did not {_lr_text(high, step)} "
        f"(grid step {significant(step, 3)})",
        {"every lr below the bound converged and every lr above did not": bool(np.array_equal(ok, lr < bound))},
    )
    return Findings(conclusion, ("finding", "value"), rows)


def plot_sweep(report: dict) -> Figure:
    """Final loss against lr, the bound as a vertical line. Runs that diverged have no final loss:
    they are marked along the top. A log axis only where the losses span decades: converged losses
    agree to ~1e-13, and a log axis over so small a range labels every tick alike."""
    lr = np.array(report["sweep"]["lr"])
    ok = np.array(report["sweep"]["converged"])
    final, _ = plots.drawable(report["sweep"]["final_loss"])
    drawn = np.isfinite(final)
    optimum = report["optimal_loss"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(optimum, color="0.6", linestyle=":", zorder=1, label=f"least-squares loss {optimum:.6g}")
    ax.plot(lr[ok], final[ok], "o", color="tab:green", label=f"converged: {np.count_nonzero(ok)}")
    if (~ok & drawn).any():
        ax.plot(lr[~ok & drawn], final[~ok & drawn], "o", color="tab:orange",
                label=f"not at the optimum: {np.count_nonzero(~ok & drawn)}")  # fmt: skip
    if (~drawn).any():  # just above the axes, in axes coordinates: they have no value to plot
        above = {"transform": ax.get_xaxis_transform(), "clip_on": False, "color": "tab:red"}
        ax.plot(lr[~drawn], np.full(np.count_nonzero(~drawn), 1.03), "v",
                label=f"diverged, no final loss: {np.count_nonzero(~drawn)}", **above)  # fmt: skip
    ax.axvline(report["predicted_bound"], color="k", linestyle="--", label=f"2/λ_max = {report['predicted_bound']:.5g}")
    values = final[drawn]
    if values.size and values.min() > 0 and values.max() / values.min() > 10:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1.5 * max(values.max(initial=optimum), optimum))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final loss")
    ax.set_title("final loss against lr: stable iff lr < 2/λ_max(H)", pad=20)  # clear of the markers above
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


ConfigStore.instance().store(name="lr_stability", node=StabilityConfig)


@hydra.main(version_base="1.3", config_path=None, config_name="lr_stability")
def main(cfg: StabilityConfig) -> None:
    with clean_exit():
        lrs = np.linspace(cfg.lr_min, cfg.lr_max, cfg.points)
        report = sweep(cfg.n, cfg.seed, cfg.steps, lrs)
        figures = {"final_loss_vs_lr.png": plot_sweep(report)}
        record("lr_stability", cfg, report, findings(report), figures, backend="numpy")


if __name__ == "__main__":
    main()
