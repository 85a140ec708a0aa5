"""§2.7: the same gradient descent, with the gradients from torch autograd.

Each step is the book's: forward, `loss.backward()`, update under `torch.no_grad()`,
zero the gradients. The history is written into a tensor on the training device, so a
cuda run does not wait for the host every step; it is checked for a non-finite loss
once per `check_every` steps (every step on the CPU, where checking costs nothing).
"""

from __future__ import annotations

import numpy as np
import torch

from src.backends import History

CUDA_CHECK_EVERY = 100


def fit(x: np.ndarray, y: np.ndarray, w0: float, b0: float, *, lr: float, steps: int, device: str = "cpu") -> History:
    device = torch.device(device)
    # Columns and 1x1 parameters, as in the book: ŷ = x²·w + b is a matrix product there,
    # and its backward pass fixes the order in which the gradient sum is added up.
    x = torch.from_numpy(x).to(device).unsqueeze(1)
    y = torch.from_numpy(y).to(device).unsqueeze(1)
    x2 = x.pow(2)
    w = torch.full((1, 1), w0, dtype=x.dtype, device=device, requires_grad=True)
    b = torch.full((1, 1), b0, dtype=x.dtype, device=device, requires_grad=True)
    history = torch.empty((steps, 3), dtype=x.dtype, device=device)
    check_every = 1 if device.type == "cpu" else CUDA_CHECK_EVERY

    done = steps
    for i in range(steps):
        y_pred = x2.mm(w) + b
        loss = (0.5 * (y_pred - y) ** 2).sum()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
            history[i, 0] = loss
            history[i, 1] = w[0, 0]
            history[i, 2] = b[0, 0]
        if (i + 1) % check_every == 0 and not torch.isfinite(history[i + 1 - check_every : i + 1, 0]).all():
            done = i + 1
            break

    rows = history[:done].cpu().numpy()
    finite = np.isfinite(rows[:, 0])
    if finite.all():
        return History(loss=rows[:, 0].copy(), w=rows[:, 1].copy(), b=rows[:, 2].copy(), diverged=False)
    first_bad = int(np.argmin(finite))
    kept = rows[:first_bad]
    return History(loss=kept[:, 0].copy(), w=kept[:, 1].copy(), b=kept[:, 2].copy(), diverged=True)
