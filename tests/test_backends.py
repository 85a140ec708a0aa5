"""Both backends, against each other and against what gradient descent must do."""

import functools
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.bench import book_numpy_loop
from src.backends.numpy_gd import BLOCK
from src.models import quadratic
from src.problem import sample_problem
from tests.conftest import ROOT, book_fit

BACKENDS = ["numpy", "torch"]


def _problem(dtype="float64", n=100, seed=0):
    return sample_problem(
        quadratic, stream="generator", seed=seed, n=n, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="normal", init_b="normal", dtype=dtype,
    )  # fmt: skip


def test_backends_follow_the_same_trajectory():
    x, y, w0, b0 = _problem()
    runs = {name: book_fit(name, x, y, w0, b0, lr=0.005, steps=800) for name in BACKENDS}
    a, b = runs["numpy"], runs["torch"]
    assert len(a.loss) == len(b.loss) == 800
    for series in ("loss", "w", "b"):
        np.testing.assert_allclose(getattr(a, series), getattr(b, series), rtol=1e-10, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_numpy_backend_in_blocks_is_section_2_6_bit_for_bit(dtype):
    """Past one block (numpy_gd.BLOCK points) the step runs block by block: still the book's numbers."""
    n = 3 * BLOCK + 11
    x, y, w0, b0 = _problem(dtype, n=n)
    lr = x.dtype.type(1.0 / n)
    column = (n, 1)
    xc, yc = x.reshape(column), y.reshape(column)
    w1, b1, loss = book_numpy_loop(xc, yc, np.full((1, 1), w0, dtype), np.full((1, 1), b0, dtype), lr, 20)
    history = book_fit("numpy", x, y, w0, b0, lr=lr, steps=20)
    assert (history.w[-1], history.b[-1]) == (w1.item(), b1.item())
    assert history.loss[-1] == loss


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_history_keeps_dtype_and_length(backend, dtype):
    x, y, w0, b0 = _problem(dtype)
    history = book_fit(backend, x, y, w0, b0, lr=0.001, steps=37)
    assert not history.diverged
    assert [len(history.loss), len(history.w), len(history.b)] == [37, 37, 37]
    assert history.w.dtype == np.dtype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_step_is_one_gradient_step(backend):
    x, y, w0, b0 = _problem()
    lr = 0.003
    history = book_fit(backend, x, y, w0, b0, lr=lr, steps=1)
    r = w0 * x**2 + b0 - y
    assert history.loss[0] == pytest.approx(0.5 * np.sum(r**2), rel=1e-12)
    assert history.w[0] == pytest.approx(w0 - lr * np.sum(r * x**2), rel=1e-12)
    assert history.b[0] == pytest.approx(b0 - lr * np.sum(r), rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_converges_to_least_squares_below_the_bound(backend):
    x, y, w0, b0 = _problem()
    history = book_fit(backend, x, y, w0, b0, lr=0.9 * quadratic.lr_bound(x), steps=3000)
    # Closed-form least squares, computed independently of src.problem.
    w_star, b_star = np.linalg.lstsq(np.column_stack([x**2, np.ones_like(x)]), y, rcond=None)[0]
    assert history.w[-1] == pytest.approx(w_star, rel=1e-9)
    assert history.b[-1] == pytest.approx(b_star, rel=1e-9)


def _next_loss(history, x, y) -> float:
    """The loss at the last parameters kept: the one that stopped training. Computed here, in float64."""
    r = history.w[-1].astype(np.float64) * x.astype(np.float64) ** 2 + history.b[-1] - y
    with np.errstate(over="ignore", invalid="ignore"):
        return 0.5 * np.sum(r * r)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lr_over_bound", [1.02, 5.0])
def test_stops_at_the_first_rise_above_the_bound(backend, dtype, lr_over_bound):
    x, y, w0, b0 = _problem(dtype)
    history = book_fit(backend, x, y, w0, b0, lr=lr_over_bound * quadratic.lr_bound(x), steps=5000)
    assert history.diverged
    assert 0 < len(history.loss) < 5000
    assert np.isfinite(history.loss).all()  # a finite blow-up: nothing overflowed
    loss = history.loss.astype(np.float64)
    assert np.all(np.diff(loss) <= 4e-4 * loss[:-1])  # it fell (up to rounding) until the stop ...
    assert _next_loss(history, x, y) > loss[-1] * 1.0001  # ... where it rose


@pytest.mark.parametrize("backend", BACKENDS)
def test_stops_at_an_overflow(backend):
    x, y, w0, b0 = _problem()
    history = book_fit(backend, x, y, w0, b0, lr=1e160, steps=50)
    assert history.diverged and len(history.loss) == 1
    assert not np.isfinite(_next_loss(history, x, y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_converged_float32_fit_is_not_mistaken_for_divergence(backend):
    x, y, w0, b0 = _problem("float32")
    # 0.99 of the bound: slow, oscillating convergence, then thousands of steps of rounding noise
    history = book_fit(backend, x, y, w0, b0, lr=0.99 * quadratic.lr_bound(x), steps=20_000)
    assert not history.diverged and len(history.loss) == 20_000


def test_numpy_training_never_imports_torch(tracking_env, tmp_path):
    code = f"""
import sys
from pathlib import Path
from src.config import load_config
from src.problem import make_problem
from src.train import train
from tests.conftest import compose_config
config = load_config(compose_config("backend=numpy", "steps=5"))
train(config, {{}}, make_problem(config), Path({str(tmp_path)!r}))
assert "src.backends.numpy_gd" in sys.modules
print("torch imported:", "torch" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=tracking_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps,every", [(1000, 100), (1000, 7), (5, 10), (1, 3)])
def test_a_thinned_history_is_the_full_one_at_every_kth_step_and_the_last(backend, steps, every):
    x, y, w0, b0 = _problem()
    fit = functools.partial(book_fit, backend)
    full, thin = fit(x, y, w0, b0, lr=0.001, steps=steps), fit(x, y, w0, b0, lr=0.001, steps=steps, every=every)
    expected = sorted({*range(0, steps, every), steps - 1})
    assert thin.step.tolist() == expected
    for series in ("loss", "w", "b"):
        np.testing.assert_array_equal(getattr(thin, series), getattr(full, series)[expected])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_thinned_diverging_history_keeps_the_step_before_the_stop(backend):
    x, y, w0, b0 = _problem()
    fit = functools.partial(book_fit, backend)
    lr = 1.01 * quadratic.lr_bound(x)
    full, thin = fit(x, y, w0, b0, lr=lr, steps=5000), fit(x, y, w0, b0, lr=lr, steps=5000, every=1000)
    assert full.diverged and thin.diverged
    assert thin.step[-1] == full.step[-1] == len(full.step) - 1
    assert (thin.loss[-1], thin.w[-1], thin.b[-1]) == (full.loss[-1], full.w[-1], full.b[-1])
