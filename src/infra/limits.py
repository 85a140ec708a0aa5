"""Forecasts that refuse or warn before a run starts: a run whose arrays or history cannot fit in the
free memory is refused; one that will take minutes, or log a gigabyte, is announced."""

from __future__ import annotations

import logging
import math

from src.errors import ConfigError

log = logging.getLogger(__name__)


LONG_RUN_SECONDS = 60


LARGE_HISTORY_BYTES = 1 << 30


STORE_BYTES_PER_POINT = 4 * 100  # four series (loss, log10_loss, w, b), ~100 bytes a row in the store


def warn_if_long(seconds: float, points: int, every: int) -> None:
    """Say so before a run that will take minutes, or log a history of a gigabyte or more."""
    size = points * STORE_BYTES_PER_POINT
    if seconds < LONG_RUN_SECONDS and size < LARGE_HISTORY_BYTES:
        return
    every_k = every * math.ceil(size / (LARGE_HISTORY_BYTES / 10))
    advice = f"; log_every={every_k} would log about {size / every_k * every / 1e9:.2f} GB" if every_k > every else ""
    duration = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
    log.warning("this run is estimated to take %s and to log %d steps (about %.1f GB in MLflow)%s",
                duration, points, size / 1e9, advice)  # fmt: skip


# Arrays the size of x at the peak of a run: x, y, the noise, the model's temporaries, and two more
# (torch's ŷ and its gradient; the numpy backend's temporaries are block-sized, so it needs less).
PEAK_ARRAYS = 6


# A kept step of the history: torch's CPU loop keeps a tuple of Python numbers (184 bytes by tracemalloc), numpy's 32.
HISTORY_ROW_BYTES = 200


def check_memory(n: int, kept: int) -> None:
    """Refuse, before drawing anything, a run whose arrays (n points) and history (`kept` steps) cannot
    fit in the memory that is free."""
    import psutil

    data, history = PEAK_ARRAYS * n * 8, HISTORY_ROW_BYTES * kept  # data drawn in float64 whatever the dtype
    available = psutil.virtual_memory().available
    if data + history <= available:
        return
    free = f"{available / 2**30:.1f} GiB is free"
    if data >= history:
        raise ConfigError(f"config key 'data.n': {n} points need about {data / 2**30:.1f} GiB, and {free}; lower it")
    raise ConfigError(
        f"config key 'steps': a history of {kept} kept steps needs about {history / 2**30:.1f} GiB, and {free}; "
        "raise log_every (every k-th step is kept) or lower steps"
    )
