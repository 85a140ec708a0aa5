"""Reading and writing the pipeline's files: checked on the way in, atomic on the way out."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from src.errors import DataFileError

PARTIAL = ".partial-"  # in the name of a file still being written; a killed writer leaves it behind


def remove_partial_files(folder: Path) -> None:
    """Remove what writers killed mid-write left in `folder` (see `atomic_path`)."""
    for leftover in Path(folder).glob(f".*{PARTIAL}*"):
        leftover.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    A crash or an interrupt therefore never leaves a half-written file under the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{PARTIAL}", suffix=path.suffix or ".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a file renamed into place gets what open() gives
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:  # a writer that failed on a full disk often does not say which file
            e.filename = str(path)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def md5(path: Path) -> str:
    """The MD5 of a file's bytes, as DVC records it."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def digest(*arrays: np.ndarray) -> str:
    """A SHA-256 of the arrays' dtypes, shapes and bytes: equal exactly when the data is."""
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(f"{array.dtype} {array.shape}".encode())
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Each of `files` ({name: bytes}) into `folder`, atomically."""
    for name, content in files.items():
        with atomic_path(Path(folder) / name) as tmp:
            tmp.write_bytes(content)


def write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_xy(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """x and y as a two-column CSV with a header, every float written round-trip exact."""
    with atomic_path(path) as tmp:
        np.savetxt(tmp, np.column_stack([x, y]), delimiter=",", header="x,y", comments="", fmt="%.17g")


def read_xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The x and y columns of a CSV written by `write_xy`; raises DataFileError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found; run `dvc repro` (or the `generate` stage) to create it")
    try:
        with open(path) as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            header = handle.readline().strip()
            table = np.loadtxt(handle, delimiter=",", ndmin=2) if header == "x,y" else None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: not a readable CSV of numbers ({e}); regenerate it with `dvc repro`") from e
    if table is None:
        problem = "the file is empty" if not header else f"expected the header 'x,y', found {header!r}"
        raise DataFileError(f"{path}: {problem}; regenerate it with `dvc repro`")
    if table.shape[1] != 2 or table.shape[0] < 2:
        raise DataFileError(f"{path}: expected 2 columns and at least 2 rows, found shape {table.shape}")
    if not np.isfinite(table).all():
        row = int(np.argmin(np.isfinite(table).all(axis=1)))
        raise DataFileError(f"{path}: non-finite value (NaN or inf) in data row {row + 1}")
    return table[:, 0], table[:, 1]


def read_json(path: Path, keys: tuple[str, ...] = (), numbers: tuple[str, ...] = ()) -> dict:
    """A JSON object that must hold `keys` and `numbers`, the latter as finite numbers.

    Raises DataFileError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found; run `dvc repro` to create it")
    try:
        payload = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: not valid JSON ({e}); regenerate it with `dvc repro`") from e
    missing = [key for key in (*keys, *numbers) if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise DataFileError(f"{path}: missing {', '.join(missing)}")
    for key in numbers:
        value = payload[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DataFileError(
                f"{path}: {key} must be a finite number, found {value!r}; regenerate it with `dvc repro`"
            )
    return payload
