"""The data and the start that a config asks for: the typed config, handed to src.problem's samplers.

It imports only numpy and the config, so the `generate` stage, and anything else that only
draws data, starts without MLflow, matplotlib or Hydra.
"""

from __future__ import annotations

import numpy as np

from src import models, problem
from src.config import TrainConfig


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


def make_problem(config: TrainConfig) -> problem.Problem:
    """The training data and the initial (w, b) that `config` asks for."""
    init = {"stream": config.rng.value, "init_w": config.init.w.value, "init_b": config.init.b.value}
    return problem.sample_problem(models.load(config.model.module), **init, **_data_args(config))


def make_test_set(config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The held-out set for `config`: its x grid and distribution, with noise of its own."""
    return problem.sample_test_set(models.load(config.model.module), **_data_args(config))
