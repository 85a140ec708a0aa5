"""The problem of §2.6 and §2.7: y = w·x² + b fitted by the loss 0.5·Σ(ŷ − y)².

Pure NumPy: data and initial values are drawn from an explicit random stream, and the
closed-form facts about the loss (its optimum, its stable step sizes) are computed here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Problem(NamedTuple):
    x: np.ndarray  # shape (n,)
    y: np.ndarray  # shape (n,)
    w0: float
    b0: float


def sample_problem(
    *,
    stream: str,
    seed: int,
    n: int,
    noise: float,
    true_w: float,
    true_b: float,
    x_min: float,
    x_max: float,
    init_w: str,
    init_b: str,
    dtype: str,
) -> Problem:
    """Draw y = true_w·x² + true_b + noise·U(0, 1) on linspace(x_min, x_max, n), then w0 and b0.

    `stream` picks the random numbers: "generator" is `np.random.default_rng(seed)`;
    "legacy_numpy" and "legacy_torch" replay the book's global-RNG calls, in the book's
    order (noise first, then w, then b), so that the book's numbers come out exactly.
    `init_w` and `init_b` are "uniform" (U(0, 1)), "normal" (N(0, 1)) or "zeros".
    """
    samplers = {
        "generator": _sample_generator,
        "legacy_numpy": _sample_legacy_numpy,
        "legacy_torch": _sample_legacy_torch,
    }
    x, y, w0, b0 = samplers[stream](seed, n, noise, true_w, true_b, x_min, x_max, init_w, init_b)
    return Problem(x.astype(dtype, copy=False), y.astype(dtype, copy=False), w0, b0)


def _sample_generator(seed, n, noise, true_w, true_b, x_min, x_max, init_w, init_b):
    rng = np.random.default_rng(seed)
    x = np.linspace(x_min, x_max, n)
    y = _noisy_parabola(x, rng, noise, true_w, true_b)
    w0 = _draw(init_w, rng.random, rng.standard_normal)
    b0 = _draw(init_b, rng.random, rng.standard_normal)
    return x, y, w0, b0


def _noisy_parabola(x: np.ndarray, rng: np.random.Generator, noise: float, true_w: float, true_b: float):
    """true_w·x² + true_b + noise·U(0, 1), built in place: at n = 1e7 every temporary is 80 MB."""
    y = x * x
    y *= true_w
    y += true_b
    noise_term = rng.random(x.size)
    noise_term *= noise
    y += noise_term
    return y


def _sample_legacy_numpy(seed, n, noise, true_w, true_b, x_min, x_max, init_w, init_b):
    # §2.6: np.random.seed(100); ... np.random.rand(x.size); w1 = rand(1, 1); b1 = rand(1, 1).
    # RandomState(seed) is that same stream without touching NumPy's global state.
    rs = np.random.RandomState(seed)
    x = np.linspace(x_min, x_max, n).reshape(n, 1)
    y = true_w * np.power(x, 2) + true_b + noise * rs.rand(x.size).reshape(n, 1)
    w0 = _draw(init_w, lambda: rs.rand(1, 1), lambda: rs.randn(1, 1))
    b0 = _draw(init_b, lambda: rs.rand(1, 1), lambda: rs.randn(1, 1))
    return x.ravel(), y.ravel(), w0, b0


def _sample_legacy_torch(seed, n, noise, true_w, true_b, x_min, x_max, init_w, init_b):
    # §2.7: torch.manual_seed(100); x = linspace in float32; y = 3x² + 2 + 0.2·rand; w = randn(1, 1).
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.unsqueeze(torch.linspace(x_min, x_max, n), dim=1)
    y = true_w * x.pow(2) + true_b + noise * torch.rand(x.size(), generator=g)
    w0 = _draw(init_w, lambda: torch.rand(1, 1, generator=g), lambda: torch.randn(1, 1, generator=g))
    b0 = _draw(init_b, lambda: torch.rand(1, 1, generator=g), lambda: torch.randn(1, 1, generator=g))
    return x.numpy().ravel(), y.numpy().ravel(), w0, b0


def _draw(scheme: str, uniform, normal) -> float:
    if scheme == "zeros":
        return 0.0
    value = uniform() if scheme == "uniform" else normal()
    return float(np.asarray(value).item())


def loss(x: np.ndarray, y: np.ndarray, w: float, b: float) -> float:
    """The book's loss, 0.5·Σ(w·x² + b − y)², summed as the book sums it (`np.sum`)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged fit's loss is inf, not a warning
        r = w * x**2 + b - y
        return float(0.5 * np.sum(r * r))


def mse(x: np.ndarray, y: np.ndarray, w: float, b: float) -> float:
    """The mean squared error of w·x² + b on (x, y): the held-out score that ranks fits."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = w * x**2 + b - y
        return float(np.mean(r * r))


def r2(x: np.ndarray, y: np.ndarray, w: float, b: float) -> float:
    """R², the share of y's variance that w·x² + b explains on (x, y): 1 - MSE / Var(y)."""
    return float(1 - mse(x, y, w, b) / np.mean((y - y.mean()) ** 2))


# Every reduction below is `np.sum` over a contiguous array, whose pairwise order is fixed by
# NumPy's own code, never `np.dot` or LAPACK: a BLAS kernel sums in an order that depends on
# the CPU and the thread count, so its last bits, and the files made from them, would too.


def hessian(x: np.ndarray) -> tuple[float, float, float]:
    """The (constant) Hessian of the loss in (w, b), [[a, c], [c, d]], as (a, c, d) = (Σx⁴, Σx², n)."""
    with np.errstate(over="ignore"):  # too large an x is reported by the callers, which check for inf
        x2 = np.square(x, dtype=np.float64)
        return float(np.sum(x2 * x2)), float(np.sum(x2)), float(x.size)


def lr_bound(x: np.ndarray) -> float:
    """The largest stable step: gradient descent on this quadratic converges iff lr < 2/λ_max(H).

    Raises ValueError when the Hessian overflows float64."""
    a, c, d = hessian(x)
    if not math.isfinite(a):
        raise ValueError(f"x is too large for float64 (largest |x| = {np.max(np.abs(x)):.3g}): Σx⁴ overflows")
    # The larger eigenvalue of a symmetric 2x2 matrix, in closed form.
    lambda_max = 0.5 * (a + d) + math.hypot(0.5 * (a - d), c)
    return 2.0 / lambda_max


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The exact minimiser (w*, b*) of the loss: the normal equations H·(w, b) = (Σx²y, Σy), solved by
    Cramer's rule. Raises ValueError when H is singular: every x² is the same, so w and b trade off."""
    a, c, d = hessian(x)
    x2 = np.square(x, dtype=np.float64)
    y = y.astype(np.float64, copy=False)
    x2y, sum_y = float(np.sum(x2 * y)), float(np.sum(y))
    det = a * d - c * c
    if not det > 1e-12 * a * d:  # Σx⁴·n ≥ (Σx²)², with equality exactly when all x² are equal
        raise ValueError(
            f"the optimum is not unique: all {x.size} points have the same x² (x in ±{math.sqrt(c / d):.6g}), "
            "so w·x² + b has one degree of freedom; use data.n >= 3, or an x range that is not symmetric"
        )
    return (d * x2y - c * sum_y) / det, (a * sum_y - c * x2y) / det


def sample_test_set(
    *, seed: int, n: int, noise: float, true_w: float, true_b: float, x_min: float, x_max: float, dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    """A held-out set: the training set's x grid and distribution, with noise of its own.

    The noise comes from `default_rng([seed, 1])`, a stream independent of every stream
    that `sample_problem` uses, so adding a test set leaves the training data unchanged.
    """
    x = np.linspace(x_min, x_max, n)
    y = _noisy_parabola(x, np.random.default_rng([seed, 1]), noise, true_w, true_b)
    return x.astype(dtype, copy=False), y.astype(dtype, copy=False)
