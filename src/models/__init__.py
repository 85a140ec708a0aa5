"""Models: one module each in this folder, chosen by `model=NAME` (conf/model/NAME.yaml names it).

A model has two parameters, w and b, and its module defines (src/models/quadratic.py is the book's):
- `FORMULA`: the fitted curve with `{w}` and `{b}` in place of the values, for figures;
- `features(x)`: what ŷ depends on x through (x² for the book's), computed once per fit, NumPy
  arrays or torch tensors alike (`x` itself, for a model that needs no more);
- `predict(f, w, b)`: ŷ from the features f, a column (n, 1), and w, b of shape (1, 1), NumPy arrays
  or torch tensors alike; the torch backend differentiates it with autograd;
- `loss_and_grad(f, y, w, b)`: (L, dL/dw, dL/db) of L = 0.5·Σ(ŷ − y)², for 1-D NumPy features f and
  y, by hand, as sums over the points (the numpy backend adds them up block by block);
- optionally `optimum(x, y)`, the exact (w*, b*), and `lr_bound(x)`, the largest stable step.
  Without them a run has no least-squares reference and no stability warning.
A model module imports numpy only: it is logged with every MLflow model, and loaded without this
repository.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from src.config import load_module

REQUIRED = ("FORMULA", "features", "predict", "loss_and_grad")


def load(module: str) -> ModuleType:
    """The model module named `module` (such as "src.models.quadratic"), checked for what a model defines."""
    return load_module(module, REQUIRED, "model")


def values(model: ModuleType, x: np.ndarray, w: float, b: float) -> np.ndarray:
    """ŷ at the points x (1-D), for numbers w and b, in x's dtype."""
    f = model.features(np.asarray(x).reshape(-1, 1))
    return model.predict(f, np.full((1, 1), w, f.dtype), np.full((1, 1), b, f.dtype)).ravel()


def label(model: ModuleType, w: str, b: str) -> str:
    """The fitted curve for a legend or title, with w and b already formatted."""
    return model.FORMULA.format(w=w, b=b)


def loss(model: ModuleType, x: np.ndarray, y: np.ndarray, w: float, b: float) -> float:
    """The loss 0.5·Σ(ŷ − y)², summed as the book sums it (`np.sum`)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged fit's loss is inf, not a warning
        r = values(model, x, w, b) - y
        return float(0.5 * np.sum(r * r))


def mse(model: ModuleType, x: np.ndarray, y: np.ndarray, w: float, b: float) -> float:
    """The mean squared error of the model on (x, y): the held-out score that ranks fits."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = values(model, x, w, b) - y
        return float(np.mean(r * r))


def r2(model: ModuleType, x: np.ndarray, y: np.ndarray, w: float, b: float) -> float:
    """R², the share of y's variance that the model explains on (x, y): 1 - MSE / Var(y)."""
    return float(1 - mse(model, x, y, w, b) / np.mean((y - y.mean()) ** 2))


def optimum(model: ModuleType, x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """The model's exact (w*, b*) on (x, y), or None when it states none."""
    return model.optimum(x, y) if hasattr(model, "optimum") else None


def lr_bound(model: ModuleType, x: np.ndarray) -> float | None:
    """The model's largest stable step on x, or None when it states none."""
    return model.lr_bound(x) if hasattr(model, "lr_bound") else None
