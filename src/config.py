"""The typed schema of `conf/`, and the one place where a composed config is checked.

The YAML files under `conf/` hold the values; the dataclasses here hold only the types.
The schema is applied by merging, not through the defaults list, because DVC composes
`conf/` in its own process, where nothing of ours has been registered with Hydra.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.errors import ConfigError


class Backend(Enum):
    numpy = "numpy"
    torch = "torch"


class Device(Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class DType(Enum):
    float32 = "float32"
    float64 = "float64"


class Stream(Enum):
    """Where the random numbers for the data and the initial w, b come from."""

    generator = "generator"  # np.random.default_rng(seed): the same for every backend
    legacy_numpy = "legacy_numpy"  # the book's np.random.seed(seed) stream (§2.6)
    legacy_torch = "legacy_torch"  # the book's torch.manual_seed(seed) stream (§2.7)


class Objective(Enum):
    """What `python -m src.train` returns to a sweeper."""

    train_loss = "train_loss"  # the final training loss
    test_mse = "test_mse"  # the mean squared error on a held-out set with fresh noise


class Init(Enum):
    uniform = "uniform"  # U(0, 1), like rand
    normal = "normal"  # N(0, 1), like randn
    zeros = "zeros"


@dataclass
class BackendConfig:
    name: Backend = MISSING


@dataclass
class DataConfig:
    n: int = MISSING
    noise: float = MISSING
    true_w: float = MISSING
    true_b: float = MISSING
    x_min: float = MISSING
    x_max: float = MISSING


@dataclass
class InitConfig:
    w: Init = MISSING
    b: Init = MISSING


@dataclass
class TrainConfig:
    backend: BackendConfig = field(default_factory=BackendConfig)
    device: Device = MISSING
    dtype: DType = MISSING
    lr: float = MISSING
    steps: int = MISSING
    log_every: int = MISSING
    seed: int = MISSING
    rng: Stream = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    init: InitConfig = field(default_factory=InitConfig)
    objective: Objective = MISSING
    experiment_name: str = MISSING


def load_config(cfg: DictConfig) -> TrainConfig:
    """Check a composed config against the schema and the value ranges; return it typed.

    Raises ConfigError naming the offending key before any work is done.
    """
    refuse_environment_values(cfg)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
        config = OmegaConf.to_object(typed)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e)) from e
    _check_ranges(config)
    return config


# Resolvers that read the process environment. Every config value is logged to MLflow and saved
# with the run, so a value taken from the environment (a token, a password) would be published.
_READS_ENVIRONMENT = re.compile(r"\$\{\s*(oc\.env|env)\s*:")


def refuse_environment_values(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is read from the environment (`${oc.env:...}`)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key, value in flatten(raw).items():
        if isinstance(value, str) and _READS_ENVIRONMENT.search(value):
            raise ConfigError(
                f"config key '{key}': {value} reads the environment, which a run's config may not: every value "
                "is logged to MLflow and saved with the run; write the value itself, or keep it out of the config"
            )


def _describe(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    message = getattr(e, "msg", None) or str(e)
    # OmegaConf appends its own context lines; the first line is the cause.
    message = message.splitlines()[0]
    return f"config key '{key}': {message}" if key else f"config: {message}"


def _check_ranges(config: TrainConfig) -> None:
    data = config.data
    checks = [
        ("lr", math.isfinite(config.lr) and config.lr > 0, f"must be a finite number > 0, got {config.lr}"),
        ("steps", config.steps >= 1, f"must be >= 1, got {config.steps}"),
        ("log_every", config.log_every >= 1, f"must be >= 1, got {config.log_every}"),
        ("seed", config.seed >= 0, f"must be >= 0, got {config.seed}"),
        (
            "seed",
            config.rng is not Stream.legacy_numpy or config.seed < 2**32,
            f"rng=legacy_numpy (np.random.seed) takes seeds below 2**32 = {2**32}, got {config.seed}",
        ),
        (
            "seed",
            config.rng is not Stream.legacy_torch or config.seed < 2**64,
            f"rng=legacy_torch (torch.manual_seed) takes seeds below 2**64 = {2**64}, got {config.seed}",
        ),
        ("data.n", data.n >= 2, f"must be >= 2 points, got {data.n}"),
        ("data.noise", math.isfinite(data.noise) and data.noise >= 0, f"must be >= 0, got {data.noise}"),
        ("data.true_w", math.isfinite(data.true_w), f"must be finite, got {data.true_w}"),
        ("data.true_b", math.isfinite(data.true_b), f"must be finite, got {data.true_b}"),
        (
            "data.x_min",
            math.isfinite(data.x_min) and math.isfinite(data.x_max) and data.x_min < data.x_max,
            f"the x range must be finite and non-empty (x_min < x_max), got [{data.x_min}, {data.x_max}]",
        ),
        (
            "device",
            not (config.backend.name is Backend.numpy and config.device is Device.cuda),
            "the numpy backend runs on the CPU only; use backend=torch device=cuda, or device=cpu",
        ),
    ]
    for key, ok, problem in checks:
        if not ok:
            raise ConfigError(f"config key '{key}': {problem}")


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """{'data': {'n': 100}} -> {'data.n': 100}."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
