"""Gradient-descent backends: one module each, with the same `fit` function.

`fit(x, y, w0, b0, lr=..., steps=..., device=..., every=..., progress=...) -> History` runs
full-batch gradient descent on 0.5·Σ(w·x² + b − y)², starting from (w0, b0), and hands back
every `every`-th step and the last one, so that a long run's history stays small.
`progress`, when given, wraps the range of steps (a progress bar, say); the math never
prints anything itself.
Each backend imports its framework itself, so choosing numpy never imports torch.
"""

from __future__ import annotations

import importlib
import math
from typing import NamedTuple

import numpy as np


class History(NamedTuple):
    """What gradient descent did, at the steps it kept: every `every`-th step, and the last one done.

    step[i] is a step number; loss[i] is the loss at the parameters entering that step, and
    w[i], b[i] are the parameters leaving it. When `diverged` is true, the loss of the step
    after the last one kept was not finite, or had risen (see `rise_limit`), and training
    stopped there.
    """

    step: np.ndarray
    loss: np.ndarray
    w: np.ndarray
    b: np.ndarray
    diverged: bool


def history(rows: np.ndarray, steps: np.ndarray, diverged: bool) -> History:
    """A History from a table of (loss, w, b) rows and the step number of each."""
    return History(
        step=steps.astype(np.int64), loss=rows[:, 0].copy(), w=rows[:, 1].copy(), b=rows[:, 2].copy(), diverged=diverged
    )


def kept_steps(steps: int, every: int) -> int:
    """How many rows a history of `steps` steps keeps: steps 0, every, 2·every, ..., and the last."""
    return (steps - 1) // every + 1 + ((steps - 1) % every != 0)


def rise_limit(y: np.ndarray) -> tuple[float, float]:
    """(rel, floor): a step's loss has *risen* when it exceeds the previous loss L by more than
    rel·L + floor.

    Below the stability bound, gradient descent on this quadratic lowers the loss at every
    step, so a rise proves divergence, and stopping there beats waiting for an overflow. Only
    rounding can make a converging loss tick up: by a few ε relative to L, plus a few ε of the
    problem's scale, 0.5·Σy² (the loss at w = b = 0), which dominates as L nears 0. The limit
    is far above both (rel = √ε: 1.5e-8 in float64, 3.5e-4 in float32), and a real divergence,
    which grows geometrically, crosses it within a few steps.
    """
    eps = float(np.finfo(y.dtype).eps)
    with np.errstate(over="ignore"):  # data near float64's limit: an infinite floor, and the loss is infinite too
        return math.sqrt(eps), 16 * eps * 0.5 * float(np.sum(np.square(y, dtype=np.float64)))


def first_bad_step(loss: np.ndarray, rel: float, floor: float) -> int:
    """The index of the first loss that is not finite or has risen over the one before it; len(loss) if none."""
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(loss)
        bad[1:] |= loss[1:] > loss[:-1] * (1 + rel) + floor
    return int(np.argmax(bad)) if bad.any() else len(loss)


# Seconds per step, fixed plus per point, measured on a 2-core x86-64 machine (README, Performance).
STEP_COST = {"numpy": (5e-6, 4.5e-9), "torch": (1e-4, 1.6e-8)}


def estimated_seconds(backend: str, n: int, steps: int) -> float:
    """A rough forecast of how long `fit` takes on the CPU: enough to tell seconds from minutes."""
    fixed, per_point = STEP_COST[backend]
    return steps * (fixed + per_point * n)


def load_fit(backend: str):
    """The `fit` function of the backend named "numpy" or "torch"."""
    return importlib.import_module(f"src.backends.{backend}_gd").fit


def resolve_device(backend: str, requested: str) -> str:
    """The device to train on: "cpu" or "cuda", from "cpu", "cuda" or "auto" (cuda when usable).

    Raises ValueError when cuda is asked for and cannot be used, saying why.
    """
    if backend == "numpy":
        if requested == "cuda":
            raise ValueError("the numpy backend runs on the CPU only; use backend=torch for device=cuda")
        return "cpu"
    import torch

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
