"""§2.7: the same gradient descent, with the gradients from torch autograd.

Each step is the book's: forward, `loss.backward()`, update under `torch.no_grad()`,
zero the gradients. Three things differ from the book's loop, none of which changes a
bit of w or b:
- x² is computed once, not every step;
- b is added into the product's buffer instead of a new one;
- the loss 0.5·Σ(ŷ − y)² is `mse_loss(ŷ, y, reduction="sum") / 2`, one fused kernel each
  way instead of four. Its gradient with respect to ŷ is exactly ŷ − y, as the book's is.
On the CPU the history is read back as Python floats, and a loss that is not finite, or has
risen (see `rise_limit`), stops training before its backward pass. On cuda it is written into
a tensor on the device, so the host does not wait for the GPU every step; it is checked every
`CUDA_CHECK_EVERY` steps, and cut at the first bad step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from src.backends import History, first_bad_step, rise_limit

CUDA_CHECK_EVERY = 100


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
    device = torch.device(device)
    dtype = x.dtype
    y_host = y
    # Columns and 1x1 parameters, as in the book: ŷ = x²·w + b is a matrix product there,
    # and its backward pass fixes the order in which the gradient sum is added up.
    x = torch.from_numpy(x).to(device).unsqueeze(1)
    y = torch.from_numpy(y).to(device).unsqueeze(1)
    x2 = x.pow(2)
    w = torch.full((1, 1), w0, dtype=x.dtype, device=device, requires_grad=True)
    b = torch.full((1, 1), b0, dtype=x.dtype, device=device, requires_grad=True)
    on_cpu = device.type == "cpu"
    rows: list = []
    rel, floor = rise_limit(y_host)
    limit = math.inf

    for i in progress(range(steps)) if progress else range(steps):
        y_pred = x2.mm(w).add_(b)  # in place: mm's backward needs its inputs, not its output
        loss = F.mse_loss(y_pred, y, reduction="sum") / 2
        value = loss.item() if on_cpu else loss.detach()
        if on_cpu:
            if not value <= limit:  # risen, or not finite (NaN compares false)
                break
            limit = value * (1 + rel) + floor
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
            rows.append((value, w.item(), b.item()) if on_cpu else torch.stack((value, w[0, 0], b[0, 0])))
        if not on_cpu and (i + 1) % CUDA_CHECK_EVERY == 0:
            recent = torch.stack([row[0] for row in rows[-CUDA_CHECK_EVERY - 1 :]])
            if not (torch.isfinite(recent).all() and (recent[1:] <= recent[:-1] * (1 + rel) + floor).all()):
                break  # the first bad step is found below

    table = np.array(rows, dtype=dtype).reshape(-1, 3) if on_cpu else torch.stack(rows).cpu().numpy()
    kept = table[: first_bad_step(table[:, 0], rel, floor)]
    diverged = len(kept) < steps
    return History(loss=kept[:, 0].copy(), w=kept[:, 1].copy(), b=kept[:, 2].copy(), diverged=diverged)
