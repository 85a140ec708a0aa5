"""§2.6: gradient descent with hand-written NumPy gradients.

For L = 0.5·Σ(ŷ − y)² with ŷ = w·x² + b:  dL/dw = Σ(ŷ − y)·x²  and  dL/db = Σ(ŷ − y).
The sums are the book's own `np.sum` calls, so w and b match §2.6 bit for bit; the
loop only avoids recomputing x² and allocating new arrays every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from src.backends import History, rise_limit


def loss_and_grad(x2: np.ndarray, y: np.ndarray, w, b, r: np.ndarray, r_x2: np.ndarray) -> tuple[float, float, float]:
    """(L, dL/dw, dL/db) at (w, b), given x² and two scratch arrays the size of x."""
    np.multiply(x2, w, out=r)
    r += b
    r -= y  # r = ŷ − y
    np.multiply(r, r, out=r_x2)
    loss = 0.5 * r_x2.sum()  # np.sum, as the book: its order is fixed, np.dot's depends on the CPU
    np.multiply(r, x2, out=r_x2)
    return loss, r_x2.sum(), r.sum()


def fit(
    x: np.ndarray,
    y: np.ndarray,
    w0: float,
    b0: float,
    *,
    lr: float,
    steps: int,
    device: str = "cpu",
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> History:
    if device != "cpu":
        raise ValueError(f"the numpy backend runs on the CPU only, not on {device!r}")
    scalar = x.dtype.type
    w, b, lr = scalar(w0), scalar(b0), scalar(lr)
    x2 = x * x
    r, r_x2 = np.empty_like(x), np.empty_like(x)
    history = np.empty((steps, 3), dtype=x.dtype)
    rel, floor = rise_limit(y)
    limit = math.inf
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and reported below
        for i in progress(range(steps)) if progress else range(steps):
            loss, grad_w, grad_b = loss_and_grad(x2, y, w, b, r, r_x2)
            if not loss <= limit:  # risen, or not finite (NaN compares false)
                return _history(history[:i], diverged=True)
            limit = loss * (1 + rel) + floor
            w -= lr * grad_w
            b -= lr * grad_b
            history[i] = loss, w, b
    return _history(history, diverged=False)


def _history(rows: np.ndarray, diverged: bool) -> History:
    return History(loss=rows[:, 0].copy(), w=rows[:, 1].copy(), b=rows[:, 2].copy(), diverged=diverged)
