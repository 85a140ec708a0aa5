"""The closed forms of src.problem against independent references, and the order of their sums."""

import math

import numpy as np
import pytest

from src import models
from src.models import quadratic


def _data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, n)
    return x, 3 * x**2 + 2 + 0.2 * rng.random(n)


def test_lr_bound_is_two_over_the_largest_eigenvalue():
    x, _ = _data()
    hessian = np.array([[np.sum(x**4), np.sum(x**2)], [np.sum(x**2), x.size]])
    assert quadratic.lr_bound(x) == pytest.approx(2 / np.linalg.eigvalsh(hessian)[-1], rel=1e-13)


@pytest.mark.parametrize("x_range", [(-1, 1), (0.5, 3.0), (-2, 0.1)])
def test_least_squares_matches_lstsq(x_range):
    x = np.linspace(*x_range, 57)
    y = -1.5 * x**2 + 0.25 + np.random.default_rng(1).normal(size=x.size)
    (w, b), *_ = np.linalg.lstsq(np.column_stack([x**2, np.ones_like(x)]), y, rcond=None)
    assert quadratic.optimum(x, y) == pytest.approx((w, b), rel=1e-11)


@pytest.mark.parametrize("x", [np.array([-1.0, 1.0]), np.array([-0.5, 0.5, 0.5, -0.5])])
def test_least_squares_on_data_with_one_x_squared_names_the_fix(x):
    with pytest.raises(ValueError, match="same x²") as raised:
        quadratic.optimum(x, np.ones_like(x))
    assert "data.n >= 3" in str(raised.value)


def test_loss_is_the_books_sum_bit_for_bit():
    x, y = _data(n=10_001)
    r = 1.7 * x**2 + 0.3 - y
    book = (0.5 * (r) ** 2).sum()  # §2.6's two lines
    assert models.loss(quadratic, x, y, 1.7, 0.3) == book
    assert models.loss(quadratic, x, y, 1.7, 0.3) == pytest.approx(0.5 * math.fsum(r * r), rel=1e-14)


def test_sums_do_not_depend_on_the_blas_thread_count():
    from threadpoolctl import threadpool_limits

    x, y = _data(n=1_000_003)
    default = models.loss(quadratic, x, y, 2.9, 2.1), quadratic.optimum(x, y), quadratic.lr_bound(x)
    with threadpool_limits(1):
        single = models.loss(quadratic, x, y, 2.9, 2.1), quadratic.optimum(x, y), quadratic.lr_bound(x)
    assert default == single
