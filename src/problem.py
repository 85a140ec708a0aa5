"""The data of §2.6 and §2.7: y = the model at (true_w, true_b) plus noise, the initial w, b, and a
held-out set; drawn from the samplers' keyword arguments, or from a config (`make_problem`).

Pure NumPy: data and initial values are drawn from an explicit random stream. The model is a
module of src/models/; the book's is src/models/quadratic.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import numpy as np

from src import models
from src.config import TrainConfig


class Problem(NamedTuple):
    x: np.ndarray  # shape (n,)
    y: np.ndarray  # shape (n,)
    w0: float
    b0: float


def sample_problem(
    model: ModuleType,
    *,
    stream: str,
    seed: int,
    n: int,
    noise: float,
    true_w: float,
    true_b: float,
    x_min: float,
    x_max: float,
    init_w: str,
    init_b: str,
    dtype: str,
) -> Problem:
    """Draw y = model(x; true_w, true_b) + noise·U(0, 1) on linspace(x_min, x_max, n), then w0 and b0.

    `stream` picks the random numbers: "generator" is `np.random.default_rng(seed)`;
    "legacy_numpy" and "legacy_torch" replay the book's global-RNG calls, in the book's
    order (noise first, then w, then b), so that the book's numbers come out exactly.
    `init_w` and `init_b` are "uniform" (U(0, 1)), "normal" (N(0, 1)) or "zeros".
    """
    samplers = {
        "generator": _sample_generator,
        "legacy_numpy": _sample_legacy_numpy,
        "legacy_torch": _sample_legacy_torch,
    }
    x, y, w0, b0 = samplers[stream](model, seed, n, noise, true_w, true_b, x_min, x_max, init_w, init_b)
    return Problem(x.astype(dtype, copy=False), y.astype(dtype, copy=False), w0, b0)


def _sample_generator(model, seed, n, noise, true_w, true_b, x_min, x_max, init_w, init_b):
    rng = np.random.default_rng(seed)
    x = np.linspace(x_min, x_max, n)
    y = _noisy(model, x, rng, noise, true_w, true_b)
    w0 = _draw(init_w, rng.random, rng.standard_normal)
    b0 = _draw(init_b, rng.random, rng.standard_normal)
    return x, y, w0, b0


def _noisy(model, x: np.ndarray, rng: np.random.Generator, noise: float, true_w: float, true_b: float):
    """The model at (true_w, true_b) + noise·U(0, 1), the noise added in place: at n = 1e7 every
    temporary is 80 MB."""
    y = models.values(model, x, true_w, true_b)
    noise_term = rng.random(x.size)
    noise_term *= noise
    y += noise_term
    return y


def _sample_legacy_numpy(model, seed, n, noise, true_w, true_b, x_min, x_max, init_w, init_b):
    # §2.6: np.random.seed(100); y = the model + 0.2·np.random.rand(x.size); w1 = rand(1, 1); b1 = rand(1, 1).
    # RandomState(seed) is that same stream without touching NumPy's global state.
    rs = np.random.RandomState(seed)
    x = np.linspace(x_min, x_max, n).reshape(n, 1)
    y = models.values(model, x, true_w, true_b).reshape(n, 1) + noise * rs.rand(x.size).reshape(n, 1)
    w0 = _draw(init_w, lambda: rs.rand(1, 1), lambda: rs.randn(1, 1))
    b0 = _draw(init_b, lambda: rs.rand(1, 1), lambda: rs.randn(1, 1))
    return x.ravel(), y.ravel(), w0, b0


def _sample_legacy_torch(model, seed, n, noise, true_w, true_b, x_min, x_max, init_w, init_b):
    # §2.7: torch.manual_seed(100); x = linspace in float32; y = the model + 0.2·rand; w = randn(1, 1).
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.unsqueeze(torch.linspace(x_min, x_max, n), dim=1)
    true = torch.full((1, 1), true_w), torch.full((1, 1), true_b)
    y = model.predict(model.features(x), *true) + noise * torch.rand(x.size(), generator=g)
    w0 = _draw(init_w, lambda: torch.rand(1, 1, generator=g), lambda: torch.randn(1, 1, generator=g))
    b0 = _draw(init_b, lambda: torch.rand(1, 1, generator=g), lambda: torch.randn(1, 1, generator=g))
    return x.numpy().ravel(), y.numpy().ravel(), w0, b0


def _draw(scheme: str, uniform, normal) -> float:
    if scheme == "zeros":
        return 0.0
    value = uniform() if scheme == "uniform" else normal()
    return float(np.asarray(value).item())


def sample_test_set(
    model: ModuleType,
    *,
    seed: int,
    n: int,
    noise: float,
    true_w: float,
    true_b: float,
    x_min: float,
    x_max: float,
    dtype: str,
) -> tuple[np.ndarray, np.ndarray]:
    """A held-out set: the training set's x grid and distribution, with noise of its own.

    The noise comes from `default_rng([seed, 1])`, a stream independent of every stream
    that `sample_problem` uses, so adding a test set leaves the training data unchanged.
    """
    x = np.linspace(x_min, x_max, n)
    y = _noisy(model, x, np.random.default_rng([seed, 1]), noise, true_w, true_b)
    return x.astype(dtype, copy=False), y.astype(dtype, copy=False)


# What a config asks for: the typed config, handed to the samplers above. This module imports only numpy
# and the config, so the `generate` stage, and anything else that only draws data, starts light.


def _data_args(config: TrainConfig) -> dict:
    """The data keys of `config`, as the keyword arguments of the samplers in src.problem."""
    data = config.data
    return {
        "seed": config.seed,
        "n": data.n,
        "noise": data.noise,
        "true_w": data.true_w,
        "true_b": data.true_b,
        "x_min": data.x_min,
        "x_max": data.x_max,
        "dtype": config.dtype.value,
    }


def make_problem(config: TrainConfig) -> Problem:
    """The training data and the initial (w, b) that `config` asks for."""
    init = {"stream": config.rng.value, "init_w": config.init.w.value, "init_b": config.init.b.value}
    return sample_problem(models.load(config.model.module), **init, **_data_args(config))


def make_test_set(config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The held-out set for `config`: its x grid and distribution, with noise of its own."""
    return sample_test_set(models.load(config.model.module), **_data_args(config))
