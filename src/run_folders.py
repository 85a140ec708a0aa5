"""A folder of its own for every run and every sweep, however many start in the same second.

Hydra names a run's folder by the clock (`outputs/<date>/<HH-MM-SS>`, conf/config.yaml), so
runs started in the same second would share one and overwrite each other's files. This
callback, listed first under `hydra.callbacks`, claims the folder before Hydra uses it:
`mkdir` is atomic, on one machine and on a shared file system alike, so exactly one process
gets `10-00-00`; the others get `10-00-00-2`, `10-00-00-3`, ... A sweep's jobs are numbered
folders inside their sweep's own folder. A folder given on the command line
(`hydra.run.dir=...`) is the user's choice and is used as it is.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from src.errors import ConfigError


def claim(folder: Path) -> Path:
    """Create `folder`, or the first of `folder-2`, `folder-3`, ... that does not exist yet; return it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        candidate = folder if n == 1 else folder.with_name(f"{folder.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


FREE_SPACE_NEEDED = 2**20  # bytes: Hydra's files, the log, history.csv and the two figures of a default run


def check_can_make(folder: Path, key: str) -> None:
    """Refuse, before Hydra makes it, a run or sweep folder (`key`: hydra.run.dir, hydra.sweep.dir)
    that cannot be made or written: a file in its place, or a read-only place to make it in."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}={folder}: that is a file, not a folder; choose another {key}")
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".can-make-", dir=existing))  # the test: make a folder there, and remove it
    except OSError as e:
        raise ConfigError(f"{key}={folder}: no folder can be made in {existing} ({e.strerror}); choose another "
                          f"{key}") from None  # fmt: skip
    free = shutil.disk_usage(existing).free
    if free < FREE_SPACE_NEEDED:  # Hydra's own files (.hydra/, the log) would fail in a traceback
        raise ConfigError(
            f"{key}={folder}: {existing} has {free // 1024} KiB free, and a run's files need about "
            f"{FREE_SPACE_NEEDED // 2**20} MiB; free some space there, or choose another {key}"
        )


def _given_on_command_line(config: DictConfig, key: str) -> bool:
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in config.hydra.overrides.hydra)


def _quoted(path: Path) -> str:
    """`path` as a quoted value of Hydra's override grammar."""
    escaped = str(path).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


class ClaimRunFolder(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if not _given_on_command_line(config, "hydra.run.dir"):
            with read_write(config.hydra.run), open_dict(config.hydra.run):
                config.hydra.run.dir = str(claim(Path(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if _given_on_command_line(config, "hydra.sweep.dir"):
            return
        folder = claim(Path(config.hydra.sweep.dir))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(folder)
            # Each job's config is composed afresh from these overrides (Hydra's load_sweep_config),
            # so the claimed folder reaches the jobs only as one of them.
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={_quoted(folder)}")


def discard(folder: Path) -> None:
    """Remove the output folder Hydra made for a run that never started (its config was refused, say),
    if it holds nothing but Hydra's own .hydra/ and an empty log; then its parents, while empty."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    if any(f.parent.name != ".hydra" and f.stat().st_size > 0 for f in files):
        return
    root = logging.getLogger()
    for handler in list(root.handlers):  # detached, not just closed: a closed FileHandler reopens to write
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == Path.cwd() or not parent.is_relative_to(Path.cwd()):
            break
        try:
            parent.rmdir()
        except OSError:  # not empty: another run's folder is in it
            break
