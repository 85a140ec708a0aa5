"""The failures a user can cause and fix, and how they reach the console: one line, no traceback."""

from __future__ import annotations

import _thread
import atexit
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


# The first SIGINT or SIGTERM that `clean_exit`'s handler saw ("SIGINT", "SIGTERM"), if any:
# exit hooks (a sweep's) read it to record how the process ended, and `stop_if_interrupted`
# raises it again where it was lost.
interrupted_by: str | None = None


class UserError(Exception):
    """A failure with a cause the user can fix; the message says what to do."""


class ConfigError(UserError, ValueError):
    """A config value that cannot be used; the message names the key and the fix."""


class DataFileError(UserError, ValueError):
    """A file the pipeline needs is missing or unusable; the message names it."""


class TrackingError(UserError, RuntimeError):
    """The MLflow store cannot be reached or used."""


class ServerStoppedAnswering(BaseException):
    """The tracking server stopped answering mid-run (src.infra.lifecycle.watch_server). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on its way out (Hydra's job runner, MLflow's
    retries) holds it: the process ends with one line."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss stopped being finite; the run is recorded as FAILED."""


class BelowWarning(logging.Filter):
    """Passes INFO and below: with a stderr handler for WARNING and above, the console splits
    into results on stdout and problems on stderr (conf/config.yaml, hydra.job_logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


# Whether the KeyboardInterrupt of the first SIGINT or SIGTERM has begun to unwind the stack (`unwinding`),
# and whether `_raise_again_until_unwinding` has found it lost.
_unwinding, _lost = threading.Event(), threading.Event()
LOST_INTERRUPT_RETRY_SECONDS = 1.0


def _raise_interrupt(signum, frame):
    global interrupted_by
    interrupted_by = signal.Signals(signum).name
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _already_stopping)
    threading.Thread(target=_raise_again_until_unwinding, name="lost-interrupt", daemon=True).start()
    raise KeyboardInterrupt(interrupted_by)


def _raise_again_until_unwinding() -> None:
    """Python runs a signal handler wherever the main thread is. Inside a finalizer (a weakref callback
    that the cycle collector calls, such as SQLAlchemy's) the KeyboardInterrupt it raises is printed as
    "Exception ignored" and dropped, and the work would go on as if the signal never came. Until the
    interrupt is seen to unwind, raise it in the main thread again, once a second."""
    while not _unwinding.wait(LOST_INTERRUPT_RETRY_SECONDS):
        _lost.set()
        _thread.interrupt_main(signal.SIGINT)  # runs _already_stopping there, which raises it again


def unwinding() -> None:
    """Called wherever a KeyboardInterrupt is caught: the stop is under way, so it is not raised again."""
    _unwinding.set()


def stop_if_interrupted() -> None:
    """Raise the interrupt again if one was handled and lost (see `_raise_again_until_unwinding`).
    Called before anything is recorded as FINISHED, so that nothing is, within the second it takes."""
    if interrupted_by is not None:
        raise KeyboardInterrupt(interrupted_by)


def _already_stopping(signum, frame):
    """A second SIGINT or SIGTERM (DVC forwards one, then Linux sends another when DVC dies) must
    not cut short the unwinding the first one began: the MLflow run still has to be ended. Once the
    first is found lost, raise it again."""
    if _lost.is_set() and not _unwinding.is_set():
        stop_if_interrupted()


def _imports_done() -> None:
    """If src.infra.startup.begin turned the cycle collector off for the imports: move every object alive now
    (the imported modules) out of its sight, and turn it back on; at exit, freeze again, so that
    shutting down does not walk them all once more. Anywhere else the collector is left as it is."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
        atexit.register(gc.freeze)


@contextmanager
def clean_exit() -> Iterator[None]:
    """Run an entry point so that failures end it cleanly.

    A UserError, running out of memory, or an OSError (a full disk, a read-only folder)
    becomes `error: ...` on stderr and exit status 1 (HYDRA_FULL_ERROR=1 keeps the traceback).
    SIGTERM is treated like Ctrl-C: either unwinds the stack, so an open MLflow run is marked
    KILLED and no file is left half-written, then exits with 130.
    """
    _imports_done()
    if threading.current_thread() is threading.main_thread():
        # SIGINT too: a process started in the background inherits it ignored, and would not stop.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _raise_interrupt)
    try:
        yield
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt as e:
        unwinding()
        global interrupted_by
        interrupted_by = interrupted_by or str(e) or "SIGINT"
        log.error("interrupted (%s); the MLflow run, if one was open, is marked KILLED", interrupted_by)
        raise SystemExit(130) from None
    except ServerStoppedAnswering as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"error: {e}") from None
    except MemoryError as e:  # numpy's says how much it asked for
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"error: out of memory ({e or 'an allocation failed'}); lower data.n or steps") from None
    except OSError as e:  # a full disk, a read-only or missing folder: name the file and the cause
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        where = f" {e.filename}" if e.filename else ""
        fix = "free some space or fix the permissions there"
        raise SystemExit(f"error: cannot write{where}: {e.strerror or e}; {fix}") from None


def end_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG): a DVC
    stage whose `dvc` died then ends as on SIGTERM (its run KILLED, no file half-written) instead
    of working on for nobody. (A sweep's workers watch the sweep instead: src.sweep.watch_the_sweep.)"""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
