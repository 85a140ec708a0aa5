"""Gradient-descent backends: one module each in this folder, chosen by `backend=NAME`
(conf/backend/NAME.yaml names the module). A backend module defines:

- `fit(model, x, y, w0, b0, *, lr, steps, device, every, progress) -> History`: full-batch
  gradient descent on the model's loss 0.5·Σ(ŷ − y)² (src/models), starting from (w0, b0),
  handing back every `every`-th step and the last one, so that a long run's history stays
  small, and stopping at the first step whose loss is not finite or has risen (`rise_limit`).
  `progress`, when given, wraps the range of steps (a progress bar, say); the math never
  prints anything itself, and never calls MLflow.
- `resolve_device(requested) -> str`: "cpu" or "cuda" from "cpu", "cuda" or "auto"; a ValueError
  that says why when the request cannot be met.
- `STEP_COST = (seconds a step, seconds a point a step)`: a rough forecast, to warn before long runs.

`checked_fit` runs any backend and checks what every backend must keep; each backend imports its
framework itself, so choosing numpy never imports torch.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import NamedTuple

import numpy as np

from src.config import load_module


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


REQUIRED = ("fit", "resolve_device", "STEP_COST")


def load(module: str) -> ModuleType:
    """The backend module named `module` (such as "src.backends.numpy_gd"), checked for what a backend defines."""
    return load_module(module, REQUIRED, "backend")


def estimated_seconds(backend: ModuleType, n: int, steps: int) -> float:
    """A rough forecast of how long `fit` takes on the CPU: enough to tell seconds from minutes."""
    fixed, per_point = backend.STEP_COST
    return steps * (fixed + per_point * n)


class BrokenBackend(RuntimeError):
    """A backend broke its contract (see this module's docstring): a bug in the backend, not in the run."""


def checked_fit(backend: ModuleType, model: ModuleType, x: np.ndarray, y: np.ndarray, w0: float, b0: float,
                **options) -> History:  # fmt: skip
    """`backend.fit(model, x, y, w0, b0, **options)`, with what every backend must keep checked here:
    a History of matching shapes, whose steps rise and stay below `steps`, and a divergence (a loss
    that is not finite, or has risen) reported as one, whether or not the backend stopped there."""
    history = backend.fit(model, x, y, w0, b0, **options)
    name = backend.__name__
    if not isinstance(history, History):
        raise BrokenBackend(f"{name}.fit returned a {type(history).__name__}, not a History")
    lengths = {len(history.step), len(history.loss), len(history.w), len(history.b)}
    if len(lengths) != 1:
        raise BrokenBackend(f"{name}.fit returned a History whose columns differ in length: {sorted(lengths)}")
    steps = np.asarray(history.step)
    if len(steps) and not (np.all(np.diff(steps) > 0) and steps[0] >= 0 and steps[-1] < options["steps"]):
        raise BrokenBackend(f"{name}.fit returned step numbers that are not increasing within [0, steps)")
    bad = first_bad_step(np.asarray(history.loss, dtype=np.float64), *rise_limit(y))
    if bad < len(history.loss):  # the backend missed it: the history up to the last good step stands
        return History(*(column[:bad] for column in history[:4]), diverged=True)
    return history


def describe_divergence(history: History, final_loss: float, lr: float, bound: float | None) -> str:
    """What stopped a diverging fit, for its run's `error` tag and the console: the step, the loss, and
    the stable step sizes, when the model states them."""
    bad = np.flatnonzero(~np.isfinite(history.loss))
    step = history.step[bad[0]] if bad.size else len(history.step) and history.step[-1] + 1
    next_loss = math.inf if bad.size else final_loss
    if step == 0 and not math.isfinite(next_loss):  # before any step: no lr is to blame
        return (
            "the loss is not finite at the start (step 0): the data or the initial w, b are too large for the "
            "dtype, so 0.5·Σ(ŷ − y)² overflows; scale the data down (data.true_w, data.true_b, data.noise)"
        )
    if not math.isfinite(next_loss):
        what = f"the loss became non-finite at step {step}"
    else:
        what = f"the loss rose at step {step}, from {history.loss[-1]:.6g} to {next_loss:.6g}"
    stable = f"is stable only for lr < {bound:.6g}" if bound is not None else "needs a smaller step"
    return f"{what} with lr={lr:g}; gradient descent on this data {stable}; lower lr"
