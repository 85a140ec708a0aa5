"""§2.7: the same gradient descent, with the gradients from torch autograd of the model's `predict`.

Each step is the book's: forward, `loss.backward()`, update under `torch.no_grad()`, zero the
gradients. The loss 0.5·Σ(ŷ − y)² is `mse_loss(ŷ, y, reduction="sum") / 2`, one fused kernel
each way instead of four; its gradient with respect to ŷ is exactly ŷ − y, as the book's is,
so not a bit of w or b changes.
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

from src.backends import History, first_bad_step, history, rise_limit

CUDA_CHECK_EVERY = 100

# Seconds per step, fixed plus per point, measured on a 2-core x86-64 machine (docs/performance.md).
STEP_COST = (1e-4, 1.6e-8)


def resolve_device(requested: str) -> str:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        reason = (
            f"this torch {torch.__version__} was built without CUDA"
            if torch.version.cuda is None
            else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"
        )
        raise ValueError(f"device=cuda was asked for, but {reason}; use device=cpu or device=auto")
    return "cuda"


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
    device = torch.device(device)
    dtype = x.dtype
    rel, floor = rise_limit(y)
    # Columns and 1x1 parameters, as in the book (and `predict`'s contract, src/models).
    x = torch.from_numpy(x).to(device).unsqueeze(1)
    y = torch.from_numpy(y).to(device).unsqueeze(1)
    f = model.features(x)  # once, not every step: the same bits of ŷ
    w = torch.full((1, 1), w0, dtype=x.dtype, device=device, requires_grad=True)
    b = torch.full((1, 1), b0, dtype=x.dtype, device=device, requires_grad=True)
    on_cpu = device.type == "cpu"
    rows: list = []  # on the CPU, (step, loss, w, b) of the steps kept; on cuda, every step's (loss, w, b)
    limit, value, done = math.inf, math.nan, steps

    for i in progress(range(steps)) if progress else range(steps):
        y_pred = model.predict(f, w, b)
        loss = F.mse_loss(y_pred, y, reduction="sum") / 2
        previous, value = value, (loss.item() if on_cpu else loss.detach())
        if on_cpu:
            if not (math.isfinite(value) and value <= limit):  # not finite (from the first step on), or risen
                done, value = i, previous
                break
            limit = value * (1 + rel) + floor
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
            if not on_cpu:
                rows.append(torch.stack((value, w[0, 0], b[0, 0])))
            elif i % every == 0:
                rows.append((i, value, w.item(), b.item()))
        if not on_cpu and (i + 1) % CUDA_CHECK_EVERY == 0:
            recent = torch.stack([row[0] for row in rows[-CUDA_CHECK_EVERY - 1 :]])
            if not (torch.isfinite(recent).all() and (recent[1:] <= recent[:-1] * (1 + rel) + floor).all()):
                break  # the first bad step is found below

    if on_cpu:
        if done > 0 and (not rows or rows[-1][0] != done - 1):  # the last step done is always kept
            rows.append((done - 1, value, w.item(), b.item()))
        table = np.array([row[1:] for row in rows], dtype=dtype).reshape(-1, 3)
        return history(table, np.array([row[0] for row in rows]), diverged=done < steps)
    table = torch.stack(rows).cpu().numpy() if rows else np.empty((0, 3), dtype=dtype)
    done = first_bad_step(table[:, 0], rel, floor)
    numbers = np.arange(done)
    keep = (numbers % every == 0) | (numbers == done - 1)
    return history(table[:done][keep], numbers[keep], diverged=done < steps)
