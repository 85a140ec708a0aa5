"""Where runs are logged, worked out without importing MLflow (`src.ui` needs it and starts light)."""

from __future__ import annotations

import os
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """The repository the runs belong to.

    DVC runs queued or `--temp` experiments in a copy under `.dvc/tmp/exps/`; it points
    DVC_ROOT at the original repository, so their runs land in its store, not the copy's.
    """
    return Path(os.environ.get("DVC_ROOT") or CODE_ROOT).resolve()


def default_uri() -> str:
    """The project's own SQLite store."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the project's own SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def is_server(uri: str) -> bool:
    """Whether `uri` is a tracking server (which has its own UI), not a database."""
    return uri.startswith(("http://", "https://"))
