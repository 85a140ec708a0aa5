"""The typed schema of `conf/`, and the one place where a composed config is checked.

The YAML files under `conf/` hold the values; the dataclasses here hold only the types.
The schema is applied by merging, not through the defaults list, because DVC composes
`conf/` in its own process, where nothing of ours has been registered with Hydra.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import Field, dataclass, field
from enum import Enum
from types import ModuleType

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.errors import ConfigError
from src.infra import env_values


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


def doc(meaning: str, allowed: str = "") -> Field:
    """A schema field with no default (the value comes from conf/) and its documentation.

    `python -m src.train --help` and docs/config.md's table of keys are generated from these
    (src/usage.py); an Enum field's allowed values come from the Enum itself.
    """
    return field(default=MISSING, metadata={"meaning": meaning, "allowed": allowed})


@dataclass
class GroupConfig:
    """A config group's choice: conf/<group>/<name>.yaml, naming the module that implements it."""

    name: str = MISSING
    module: str = MISSING


def load_module(module: str, required: tuple[str, ...], group: str) -> ModuleType:
    """The module a `group` choice names (its `module` key), checked for the names that `group`'s modules
    define (`required`); ValueError, naming what is wrong and where the contract is, if it fails."""
    contract = f"see src/{group}s/__init__.py"
    try:
        loaded = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{group} module {module!r} cannot be imported ({e}); {contract}") from e
    missing = [name for name in required if not hasattr(loaded, name)]
    if missing:
        raise ValueError(f"{group} module {module!r} lacks {', '.join(missing)}; {contract}")
    return loaded


@dataclass
class DataConfig:
    n: int = doc("number of points, on linspace(x_min, x_max)", ">= 2")
    noise: float = doc("noise amplitude: y = the model at (true_w, true_b) + noise·U(0, 1)", ">= 0")
    true_w: float = doc("the w that generates the data", "finite")
    true_b: float = doc("the b that generates the data", "finite")
    x_min: float = doc("the smallest x", "finite, < x_max")
    x_max: float = doc("the largest x", "finite, > x_min")


@dataclass
class InitConfig:
    w: Init = doc("how the initial w is drawn: U(0, 1), N(0, 1) or 0")
    b: Init = doc("how the initial b is drawn: U(0, 1), N(0, 1) or 0")


@dataclass
class TrainConfig:
    model: GroupConfig = field(
        default_factory=GroupConfig,
        metadata={"meaning": "config group: the model fitted, a module of src/models/ (docs/make-it-yours.md)"},
    )
    backend: GroupConfig = field(
        default_factory=GroupConfig,
        metadata={"meaning": "config group: hand-written NumPy gradients (§2.6), torch autograd (§2.7), or yours"},
    )
    device: Device = doc("where torch computes; auto: cuda when usable. The numpy backend is CPU-only")
    dtype: DType = doc("the floating-point type of the data, w and b")
    lr: float = doc("the gradient-descent step size", "> 0; stable below 2/λ_max (see Step size)")
    steps: int = doc("how many gradient-descent steps", ">= 1")
    log_every: int = doc("keep every k-th step (and the last) of the history: raise it for long runs", ">= 1")
    seed: int = doc("the seed of the random stream", ">= 0; < 2**32 for legacy_numpy, < 2**64 for legacy_torch")
    rng: Stream = doc(
        "where the data and the start come from. generator: np.random.default_rng(seed), the same for both "
        "backends; legacy_numpy, legacy_torch: the book's global-RNG streams (§2.6, §2.7)"
    )
    data: DataConfig = field(default_factory=DataConfig)
    init: InitConfig = field(default_factory=InitConfig)
    objective: Objective = doc("what a run returns to a sweeper: the final training loss, or the held-out MSE")
    experiment_name: str = doc("the MLflow experiment that runs are recorded in", "any name")


def load_config(cfg: DictConfig) -> TrainConfig:
    """Check a composed config against the schema and the value ranges; return it typed.

    Raises ConfigError naming the offending key before any work is done.
    """
    env_values.refuse_in(flatten(OmegaConf.to_container(cfg, resolve=False)))
    try:
        typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
        config = OmegaConf.to_object(typed)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e)) from e
    _check_ranges(config)
    return config


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
