"""§2.6: gradient descent with the model's hand-written NumPy gradient (`loss_and_grad`).

The model's sums are the book's own `np.sum` calls, so w and b match §2.6 bit for bit. At
large n the loop works block by block, in cache, adding the blocks' sums in the order np.sum
would (see `summation_tree`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from src.backends import History, history, kept_steps, rise_limit

# Points per block. A step makes several passes over its arrays; block by block, they run in the
# CPU's cache instead of memory, and the model's temporaries (256 KiB each in float64) are reused
# from the heap instead of mapped afresh, as they were at 2 MiB each. Measured here, a step of the
# book's model at n = 1e7, float64: 87 ms in blocks of 2**18 points, 43 ms of 2**14, 35 ms of 2**15.
BLOCK = 1 << 15

Tree = int | tuple["Tree", "Tree"]


def summation_tree(n: int, block: int = BLOCK) -> tuple[list[tuple[int, int]], Tree]:
    """Blocks of [0, n), in order, and the tree in which np.sum adds them up.

    np.sum adds a contiguous array pairwise: more than 128 numbers are split in two at n // 2,
    rounded down to a multiple of 8, and each half is added up the same way. Splitting [0, n) by
    that rule down to at most `block` points gives blocks whose sums, added along the returned
    tree (a block's index, or a pair of subtrees), are np.sum of the whole, bit for bit.
    """
    blocks: list[tuple[int, int]] = []

    def split(start: int, stop: int) -> Tree:
        if stop - start <= block:
            blocks.append((start, stop))
            return len(blocks) - 1
        half = (stop - start) // 2
        middle = start + half - half % 8
        return split(start, middle), split(middle, stop)

    return blocks, split(0, n)


def _add_up(tree: Tree, sums: list[np.ndarray]) -> np.ndarray:
    if isinstance(tree, int):
        return sums[tree]
    return _add_up(tree[0], sums) + _add_up(tree[1], sums)


def loss_and_grad(model, f: np.ndarray, y: np.ndarray, w, b, blocks=None, tree: Tree = 0) -> tuple:
    """The model's (L, dL/dw, dL/db) at (w, b) from the features f, block by block when `blocks` and
    `tree` (`summation_tree(len(f))`) are given, and then added up in np.sum's order."""
    if blocks is None or len(blocks) == 1:
        return model.loss_and_grad(f, y, w, b)
    sums = [np.array(model.loss_and_grad(f[start:stop], y[start:stop], w, b)) for start, stop in blocks]
    return tuple(_add_up(tree, sums))


# Seconds per step, fixed plus per point, measured on a 2-core x86-64 machine (docs/performance.md).
STEP_COST = (5e-6, 4.5e-9)


def resolve_device(requested: str) -> str:
    if requested == "cuda":
        raise ValueError("the numpy backend runs on the CPU only; use backend=torch for device=cuda, or device=cpu")
    return "cpu"


def fit(
    model,
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
    f = model.features(x)
    blocks, tree = summation_tree(len(x))
    rows = np.empty((kept_steps(steps, every), 3), dtype=x.dtype)
    numbers = np.empty(len(rows), dtype=np.int64)
    kept = 0
    rel, floor = rise_limit(y)
    limit, loss = math.inf, math.nan
    diverged = False
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and reported below
        for i in progress(range(steps)) if progress else range(steps):
            previous = loss
            loss, grad_w, grad_b = loss_and_grad(model, f, y, w, b, blocks, tree)
            if not (math.isfinite(loss) and loss <= limit):  # not finite (from the first step on), or risen
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
