"""§2.6: gradient descent with hand-written NumPy gradients.

For L = 0.5·Σ(ŷ − y)² with ŷ = w·x² + b:  dL/dw = Σ(ŷ − y)·x²  and  dL/db = Σ(ŷ − y).
The sums are the book's own `np.sum` calls, so w and b match §2.6 bit for bit; the
loop only avoids recomputing x² and allocating new arrays every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from src.backends import History, history, kept_steps, rise_limit


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
    every: int = 1,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> History:
    if device != "cpu":
        raise ValueError(f"the numpy backend runs on the CPU only, not on {device!r}")
    scalar = x.dtype.type
    w, b, lr = scalar(w0), scalar(b0), scalar(lr)
    x2 = x * x
    r, r_x2 = np.empty_like(x), np.empty_like(x)
    rows = np.empty((kept_steps(steps, every), 3), dtype=x.dtype)
    numbers = np.empty(len(rows), dtype=np.int64)
    kept = 0
    rel, floor = rise_limit(y)
    limit, loss = math.inf, math.nan
    diverged = False
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and reported below
        for i in progress(range(steps)) if progress else range(steps):
            previous = loss
            loss, grad_w, grad_b = loss_and_grad(x2, y, w, b, r, r_x2)
            if not loss <= limit:  # risen, or not finite (NaN compares false)
                diverged, i, loss = True, i - 1, previous  # the last step done is the one before
                break
            limit = loss * (1 + rel) + floor
            w -= lr * grad_w
            b -= lr * grad_b
            if i % every == 0:
                rows[kept], numbers[kept] = (loss, w, b), i
                kept += 1
        else:
            i = steps - 1
    if i >= 0 and (kept == 0 or numbers[kept - 1] != i):  # the last step done is always kept
        rows[kept], numbers[kept] = (loss, w, b), i
        kept += 1
    return history(rows[:kept], numbers[:kept], diverged)
