"""The book's model (§2.6, §2.7): y = w·x² + b, fitted by the loss L = 0.5·Σ(ŷ − y)².

This module is the one place the formula is written. It imports numpy only, because it is
logged with every MLflow model and loaded without this repository.
"""

import math

import numpy as np

FORMULA = "{w}·x² + {b}"  # for figures and titles, with the values of w and b in place


def features(x):
    """What ŷ depends on x through, computed once per fit: x² (NumPy arrays or torch tensors)."""
    return x**2


def predict(f, w, b):
    """ŷ from the features f = x², a column (n, 1), and parameters w, b of shape (1, 1): NumPy arrays
    or torch tensors. The book's shapes and its matrix product: torch differentiates this as §2.7
    does, so the gradient's sum is added up in the book's order."""
    return f @ w + b


def loss_and_grad(f: np.ndarray, y: np.ndarray, w, b) -> tuple:
    """§2.6's hand-written gradient: (L, dL/dw, dL/db) at (w, b), for 1-D features f = x² and y.

    dL/dw = Σ(ŷ − y)·x² and dL/db = Σ(ŷ − y), summed with the book's `np.sum` (see src/backends)."""
    r = f * w + b - y
    return 0.5 * np.sum(r * r), np.sum(r * f), np.sum(r)


# The loss is a quadratic in (w, b), so its optimum and its stable step sizes have closed forms.
# Every reduction is `np.sum` over a contiguous array, whose pairwise order is fixed by NumPy's
# own code, never `np.dot` or LAPACK: a BLAS kernel sums in an order that depends on the CPU and
# the thread count, so its last bits, and the files made from them, would too.


def _hessian(x: np.ndarray) -> tuple[float, float, float]:
    """The (constant) Hessian of the loss in (w, b), [[a, c], [c, d]], as (a, c, d) = (Σx⁴, Σx², n)."""
    with np.errstate(over="ignore"):  # too large an x is reported by the callers, which check for inf
        x2 = np.square(x, dtype=np.float64)
        return float(np.sum(x2 * x2)), float(np.sum(x2)), float(x.size)


def lr_bound(x: np.ndarray) -> float:
    """The largest stable step: gradient descent on this quadratic converges iff lr < 2/λ_max(H).

    Raises ValueError when the Hessian overflows float64."""
    a, c, d = _hessian(x)
    if not math.isfinite(a):
        raise ValueError(f"x is too large for float64 (largest |x| = {np.max(np.abs(x)):.3g}): Σx⁴ overflows")
    lambda_max = 0.5 * (a + d) + math.hypot(0.5 * (a - d), c)  # of a symmetric 2x2 matrix, in closed form
    return 2.0 / lambda_max


def optimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The exact minimiser (w*, b*) of the loss: the normal equations H·(w, b) = (Σx²y, Σy), solved by
    Cramer's rule. Raises ValueError when H is singular: every x² is the same, so w and b trade off."""
    a, c, d = _hessian(x)
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
