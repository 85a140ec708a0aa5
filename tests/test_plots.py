"""The figures' data preparation and what their artists show: no overflow, no hidden line, honest labels."""

import io
import math
import warnings

import numpy as np
import pytest

from src import plots
from src.models import quadratic

X = np.linspace(-1, 1, 50)
Y = 3 * X**2 + 2


@pytest.fixture
def no_warnings():
    """Any warning (numpy's overflow, matplotlib's) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _drawn(fig) -> None:
    """Render `fig` fully, as saving it does (limits, ticks, layout), then free it."""
    fig.savefig(io.BytesIO(), format="png")
    plots.close(fig)


def _line(ax, label_start: str):
    [line] = [line for line in ax.get_lines() if line.get_label().startswith(label_start)]
    return line


def _legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_drawable_masks_what_an_axis_cannot_draw(no_warnings):
    values = np.array([2.0, -3.0, 0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 1e-300])
    linear, left_out = plots.drawable(values)
    np.testing.assert_array_equal(np.isnan(linear), [False, False, False, True, True, True, True, True, False])
    assert left_out == 5
    log, left_out = plots.drawable(values, log=True)
    np.testing.assert_array_equal(np.isnan(log), [False, True, True, True, True, True, True, True, True])
    assert left_out == 8
    assert log[0] == 2.0 and linear[1] == -3.0  # what can be drawn is left as it is


def test_a_loss_history_that_overflows_is_plotted_without_warnings_and_says_what_is_left_out(no_warnings):
    # 1e300 alone made matplotlib's log axis overflow ("overflow encountered in exp") before.
    loss = np.array([400.0, 1e10, 1e300, np.inf, np.nan, 0.0])
    fig = plots.plot_loss(np.arange(len(loss)), loss)
    ax = fig.axes[0]
    shown = _line(ax, "gradient descent").get_ydata()
    np.testing.assert_array_equal(shown[:2], [400.0, 1e10])
    assert np.isnan(shown[2:]).all()
    assert any(text.startswith("not drawn: 4 losses") for text in _legend_texts(ax))
    _drawn(fig)


def test_a_finite_loss_history_has_no_note():
    fig = plots.plot_loss(np.arange(100), np.geomspace(400, 0.2, 100), optimum=0.18)
    assert not any("not drawn" in text for text in _legend_texts(fig.axes[0]))
    _drawn(fig)


@pytest.mark.parametrize("w,b", [(1e308, 1e308), (-1e308, 1e308), (math.inf, 1.0), (1e200, 0.0)])
def test_fit_plots_of_diverged_parameters_draw_without_warnings(no_warnings, w, b):
    for fig in (plots.plot_fit(quadratic, X, Y, w, b), plots.plot_evaluation(quadratic, X, Y, X, Y, w, b, (3.0, 2.0))):
        ax = fig.axes[0]
        assert any(text.startswith("not drawn: ") for text in _legend_texts(ax))
        assert len(ax.get_title()) < 60  # 1e308 printed with 4 decimals ran to 300 digits
        _drawn(fig)


def test_the_least_squares_curve_shows_on_the_fit_and_their_difference_below():
    # The converged case: the two curves coincide to the eye.
    w_star = 3.0 + 1e-6
    fig = plots.plot_evaluation(quadratic, X, Y, X, Y, 3.0, 2.0, (w_star, 2.0))
    ax, gap = fig.axes
    fit, least_squares = _line(ax, "fit:"), _line(ax, "least squares:")
    assert least_squares.get_zorder() > fit.get_zorder() > max(c.get_zorder() for c in ax.collections)
    assert fit.get_linewidth() >= 2 * least_squares.get_linewidth()  # the fit shows on both sides of the optimum
    assert fit.get_color() != least_squares.get_color() and least_squares.get_linestyle() == "--"
    [difference] = gap.get_lines()[:1]
    grid = difference.get_xdata()
    np.testing.assert_allclose(difference.get_ydata(), (3.0 - w_star) * grid**2, atol=1e-15)
    assert "train" in ax.get_title() and "held-out" in ax.get_title()  # which points are shown
    _drawn(fig)


def test_the_run_fit_calls_the_points_data_and_draws_the_curve_above_them():
    fig = plots.plot_fit(quadratic, X, Y, 3.0, 2.0)
    ax = fig.axes[0]
    assert _legend_texts(ax) == ["predict", "data"]
    assert _line(ax, "predict").get_zorder() > ax.collections[0].get_zorder()
    _drawn(fig)


def test_the_loss_is_drawn_above_the_optimum_it_converges_onto():
    fig = plots.plot_loss(np.arange(800), np.geomspace(400, 0.18, 800), optimum=0.18)
    ax = fig.axes[0]
    optimum = _line(ax, "least-squares optimum")
    assert _line(ax, "gradient descent").get_zorder() > optimum.get_zorder()
    _drawn(fig)


def test_a_run_stopped_after_one_step_shows_its_point_at_a_whole_step():
    fig = plots.plot_loss(np.array([0]), np.array([404.2]))
    ax = fig.axes[0]
    assert _line(ax, "gradient descent").get_marker() not in (None, "None", "")  # a line of one point is invisible
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0"]
    _drawn(fig)


def test_a_sweep_objective_too_large_to_draw_is_marked_along_the_top(no_warnings):
    rows = [
        {"job": 0, "backend": "numpy", "lr": 0.001, "status": "FINISHED", "objective": 0.0035},
        {"job": 1, "backend": "numpy", "lr": 0.01, "status": "FINISHED", "objective": 1e300},
        {"job": 2, "backend": "numpy", "lr": 0.05, "status": "FAILED", "objective": math.inf},
    ]
    fig = plots.plot_sweep(rows, "test_mse", best=rows[0])
    ax = fig.axes[0]
    assert list(_line(ax, "numpy").get_ydata()) == [0.0035]
    assert _line(ax, "failed, diverged or above").get_xdata() == pytest.approx([0.01, 0.05])
    _drawn(fig)
