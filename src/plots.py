"""The figures of a run, drawn off-screen (Agg), in the book's style."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from src import models  # noqa: E402
from src.datafiles import atomic_path  # noqa: E402

MAX_POINTS = 2000  # more dots than this draw no differently, but cost seconds and gigabytes at n = 1e7
# Near float64's maximum, 1.8e308, matplotlib overflows computing an axis's limits (the data's
# range plus margins) and a log axis's ticks (which run a few strides of decades past the data).
# Within ±1e100, and on a log axis within [1e-100, 1e100], there is room for both.
AXIS_EXPONENT = 100
AXIS_MAX = 10.0**AXIS_EXPONENT


def _thin(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """At most MAX_POINTS evenly spaced entries of each array (all the same length)."""
    n = len(arrays[0])
    if n <= MAX_POINTS:
        return arrays
    keep = np.linspace(0, n - 1, MAX_POINTS).astype(int)
    return tuple(a[keep] for a in arrays)


def drawable(values: np.ndarray, log: bool = False) -> tuple[np.ndarray, int]:
    """`values` as float64 with NaN (a gap in a line) wherever an axis cannot draw them, and how many.

    Values that are not finite, or beyond ±AXIS_MAX, where the axis's own limits would overflow,
    never draw; on a log axis (`log`), neither do values ≤ 0 or below 1/AXIS_MAX.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = np.abs(values) <= AXIS_MAX  # False for inf and NaN too
    if log:
        ok &= values >= 1 / AXIS_MAX
    return np.where(ok, values, np.nan), int(np.count_nonzero(~ok))


def log10_loss(loss: np.ndarray) -> np.ndarray:
    """log10 of the loss, for linear-axis charts (MLflow's, DVC's); a loss of 0 shows as the dtype's smallest."""
    return np.log10(np.maximum(loss, np.finfo(loss.dtype).tiny))


def curve(model, w: float, b: float, grid: np.ndarray) -> tuple[np.ndarray, int]:
    """The model at (w, b) on `grid`, for a line; points beyond ±AXIS_MAX (a diverged w or b) become gaps."""
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is the case handled here, by masking
        values = models.values(model, np.asarray(grid, dtype=np.float64), w, b)
    return drawable(values)


def _label(model, w: float, b: float) -> str:
    return models.label(model, _coefficient(w), _coefficient(b))


def _coefficient(value: float) -> str:
    """w or b for a title or legend: 4 decimals, as the book prints them, unless that would run to
    hundreds of digits (a diverged run's 1e300) or to none (1e-9)."""
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4e}"


def _run_figure():
    """A figure of a run (fit, loss), with fixed margins that fit its labels: every run, every sweep job
    draws two, and working the margins out (`tight_layout`) would cost as much as drawing them."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    fig.subplots_adjust(left=0.14, right=0.95, bottom=0.11, top=0.93)
    return fig, ax


def _note_left_out(ax, count: int, what: str) -> None:
    """Say in the legend (which is placed clear of the data) that `count` values (`what`) are not drawn."""
    if count:
        ax.plot([], [], linestyle="none", label=f"not drawn: {count} {what}")


def plot_fit(model, x: np.ndarray, y: np.ndarray, w: float, b: float) -> Figure:
    """The book's figure: the data as blue dots, the fitted model as a red line."""
    fig, ax = _run_figure()
    grid = np.linspace(x.min(), x.max(), 400)
    fitted, left_out = curve(model, w, b, grid)
    ax.plot(grid, fitted, "r-", label="predict", zorder=3)
    ax.scatter(*_thin(x, y), color="blue", marker="o", label="data")  # the book's label, "true", reads as a curve
    _note_left_out(ax, left_out, f"curve points past ±1e{AXIS_EXPONENT}\n(diverged w, b)")
    ax.set_xlim(x.min(), x.max())
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"y = {_label(model, w, b)}")
    ax.legend()
    return fig


def plot_evaluation(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    w: float,
    b: float,
    optimum: tuple[float, float] | None,
) -> Figure:
    """The fit and the least-squares optimum (when the model states one), over the training and the
    held-out points.

    When training converged the two curves coincide to the eye, so the optimum is drawn as a thin
    black dashed line on top of a wide red fit, and a panel below plots their difference: both
    curves stay visible, and how far the fit is from the optimum can be read off.
    """
    rows = {"nrows": 2, "sharex": True, "gridspec_kw": {"height_ratios": [3, 1]}} if optimum else {"nrows": 1}
    fig, axes = plt.subplots(figsize=(6, 5.4 if optimum else 4.5), **rows)
    ax = axes[0] if optimum else axes
    grid = np.linspace(min(x_train.min(), x_test.min()), max(x_train.max(), x_test.max()), 200)
    fitted, left_out = curve(model, w, b, grid)
    ax.scatter(*_thin(x_train, y_train), color="blue", marker="o", s=14, label="train points")
    ax.scatter(*_thin(x_test, y_test), color="orange", marker="x", s=18, label="held-out test points")
    ax.plot(grid, fitted, "r-", linewidth=3, zorder=3, label=f"fit: {_label(model, w, b)}")
    if optimum:
        optimal, _ = curve(model, *optimum, grid)
        ax.plot(grid, optimal, "k--", linewidth=1, zorder=4, label=f"least squares: {_label(model, *optimum)}")
    _note_left_out(ax, left_out, f"fit points past ±1e{AXIS_EXPONENT}\n(diverged w, b)")
    ax.set_ylabel("y")
    ax.set_title(f"fit{' and least squares' if optimum else ''}, over train and held-out test points")
    ax.legend(fontsize=8)
    if optimum:
        gap = axes[1]
        with np.errstate(invalid="ignore"):  # inf - inf where the fit diverged: a gap
            gap.plot(grid, fitted - optimal, "r-")
        gap.axhline(0, color="k", linestyle="--", linewidth=1)
        gap.set_ylabel("fit − least sq.")
        gap.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    (axes[1] if optimum else ax).set_xlabel("x")
    fig.tight_layout()
    return fig


def plot_loss(step: np.ndarray, loss: np.ndarray, optimum: float | None = None) -> Figure:
    """Training loss against step, on a log scale; with `optimum`, the least-squares loss as a line.

    Losses a log axis cannot draw (non-finite, ≤ 0, or outside [1/AXIS_MAX, AXIS_MAX]) are gaps,
    counted in a note. A short history (a run stopped early) has markers, so that one point shows.
    """
    fig, ax = _run_figure()
    shown, left_out = drawable(loss, log=True)
    marker = "o" if len(shown) <= 50 else None
    ax.plot(step, shown, marker=marker, label="gradient descent", zorder=3)  # above the optimum it converges onto
    if optimum is not None:
        ax.axhline(optimum, color="k", linestyle="--", zorder=2, label=f"least-squares optimum {optimum:.6g}")
    _note_left_out(ax, left_out, f"losses a log axis cannot show\n(non-finite, ≤ 0, or past 1e±{AXIS_EXPONENT})")
    if optimum is not None or left_out:
        ax.legend()
    ax.set_yscale("log")
    if len(step) <= 10:  # a run stopped early: a tick at each step it made, not at fractions of one
        ax.set_xticks(step)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss = 0.5·Σ(ŷ − y)²")
    ax.set_title("training loss")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def png(fig: Figure) -> bytes:
    """`fig` as PNG bytes; frees it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    close(fig)
    return buffer.getvalue()


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

    Jobs that failed or diverged have no objective to plot, and one above AXIS_MAX none that an
    axis can draw: they are marked along the top, so they never set the axis. `best`, the best
    job's row, is circled.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    scored = [r for r in rows if r["status"] == "FINISHED" and abs(r["objective"]) <= AXIS_MAX]  # not inf, NaN
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
        off_scale = any(r["status"] == "FINISHED" and np.isfinite(r["objective"]) for r in unscored)
        what = f"failed, diverged or above 1e{AXIS_EXPONENT}" if off_scale else "failed or diverged"
        ax.plot([r["lr"] for r in unscored], [1.04] * len(unscored), "v", label=f"{what}: {len(unscored)}", **above)
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
