"""The failures a user can cause and fix, and how they reach the console: one line, no traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A failure with a cause the user can fix; the message says what to do."""


class ConfigError(UserError, ValueError):
    """A config value that cannot be used; the message names the key and the fix."""


class DataFileError(UserError, ValueError):
    """A file the pipeline needs is missing or unusable; the message names it."""


class TrackingError(UserError, RuntimeError):
    """The MLflow store cannot be reached or used; nothing was logged."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss stopped being finite; the run is recorded as FAILED."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a UserError into `error: ...` on stderr and exit status 1 (HYDRA_FULL_ERROR=1 keeps the traceback)."""
    try:
        yield
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"error: {e}") from None
