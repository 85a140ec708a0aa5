"""The DVC stages: `generate`, `train`, `evaluate` (see dvc.yaml).

Each stage reads `params.yaml`, which DVC composes from `conf/` (with any `-S` overrides),
through the same typed schema as `python -m src.train`. It never re-reads `conf/` itself:
that would silently ignore the overrides.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.config import TrainConfig, load_config
from src.errors import ConfigError, clean_exit, end_with_parent

MODEL_TAG = "model_md5"  # set by `train` on its MLflow run: the digest of fit.json, by which `evaluate` finds it


def load_params(path: Path) -> tuple[TrainConfig, dict]:
    """The checked config in `path`, and the same config as a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found; `make params` (or `dvc exp run`) composes it from conf/")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"{path}: not readable as YAML ({e}); recreate it with `make params`") from e
    return load_config(cfg), OmegaConf.to_container(cfg, resolve=True)


@contextmanager
def stage_errors() -> Iterator[None]:
    """Log to the console; a failure the user can fix ends the stage with one line and status 1.

    The stage also ends, as on SIGTERM (its MLflow run KILLED, no file half-written), when
    the `dvc` that started it dies: otherwise it would train on, writing outputs nobody records.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with clean_exit():
        end_with_parent()
        yield
