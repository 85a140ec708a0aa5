"""MLflow at the edge: where runs go, how the store is opened safely, and what a run records.

With MLFLOW_TRACKING_URI unset, runs go to the SQLite file `mlflow.db` at the project
root (an absolute path, so runs started from any folder land in it) and artifacts to
`mlruns/` beside it: plain `mlflow ui`, started from the root, shows them all.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import http.client
import io
import json
import logging
import os
import platform
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager, redirect_stderr
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from src import datafiles, errors, models
from src.errors import TrackingError
from src.stores import CODE_ROOT, default_uri, is_server, project_root, tracking_uri

log = logging.getLogger(__name__)

# Against a tracking server, MLflow prints "View run ... at: <url>" to stdout as each run ends;
# every run here logs its own link once (src.train.log_summary), so MLflow's copy is noise.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# Logging the model copies its files with a "Downloading artifacts" progress bar, every run: noise too.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def current_client() -> MlflowClient:
    """A client for the current tracking URI."""
    return MlflowClient(tracking_uri())


def open_experiment(uri: str, name: str) -> tuple[MlflowClient, str]:
    """A client for `uri` and the id of experiment `name`, creating either when missing.

    A new SQLite file is created, migrated and given the experiment by one process at
    a time: MLflow's schema migration corrupts the file when several processes run it
    at once. Once the experiment exists, processes open the store without waiting.
    See `_prepare_store` for how a store is created.
    """
    check_uri(uri)
    db = _sqlite_path(uri)
    if is_server(uri):
        _check_server(uri, name)
    elif db is None and "://" in uri:
        _check_database(uri)
    if db is not None and db.exists() and not db.is_file():
        raise TrackingError(f"the MLflow store {uri} is {_file_kind(db)}, not a database file; point "
                            "MLFLOW_TRACKING_URI at a file, e.g. sqlite:////absolute/path/mlflow.db")  # fmt: skip
    # MLflow logs every store error with its traceback, then raises it; it is reported here in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    try:
        if db is not None and db.exists():
            _check_writable(db)
        if db is None or _experiment_exists(db, name):
            client = MlflowClient(uri)
            mlflow.set_tracking_uri(uri)  # for the fluent calls: start_run, log_model, register_model
            experiment_id = _get_or_create_experiment(client, name, artifact_location=None)
            close_stale_runs(client, experiment_id)
            return client, experiment_id
        if db.exists() and db.stat().st_size > 0:
            _store_schema_and_runs(db)  # refuses another program's file before a lock file is made beside it
        db.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(db.with_name(db.name + ".lock")):
            _prepare_store(db)
            client = MlflowClient(uri)
            mlflow.set_tracking_uri(uri)
            artifacts = (db.parent / "mlruns").as_uri()
            return client, _get_or_create_experiment(client, name, artifact_location=artifacts)
    except (*STORE_ERRORS, OSError) as e:  # OSError: the folder or the lock file cannot be made
        raise TrackingError(_explain(shown(uri), e)) from e


STORE_ERRORS = (MlflowException, SQLAlchemyError, sqlite3.Error)


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Turn a failure of the MLflow store into a TrackingError that names the store and the fix."""
    try:
        yield
    except STORE_ERRORS as e:
        raise TrackingError(_explain(shown(uri), e)) from e


def shown(uri: str) -> str:
    """`uri` as it may be printed: a database URI's password replaced by ***."""
    if _sqlite_path(uri) is not None or "://" not in uri or is_server(uri):
        return uri
    return make_url(uri).render_as_string(hide_password=True)


def check_uri(uri: str) -> None:
    """Refuse, in one line and before anything is made, a tracking URI that runs cannot be recorded
    into: an in-memory SQLite database, a file store (a folder), or a database with no driver here."""
    fix = "use sqlite:////absolute/path/mlflow.db, a database (postgresql+psycopg://...), or a server (http://...)"
    if uri.startswith("sqlite:") and not uri.startswith("sqlite:///"):
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri} is an in-memory SQLite database, which keeps no run; {fix}")
    if is_server(uri) or uri.startswith("sqlite:///"):
        return
    if "://" not in uri or uri.startswith("file:"):
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri} is a file store (a folder of runs), which this project does "
                            f"not record into; {fix}")  # fmt: skip
    try:
        make_url(uri).get_dialect().import_dbapi()
    except (SQLAlchemyError, ImportError) as e:
        raise TrackingError(f"MLFLOW_TRACKING_URI={shown(uri)}: no database driver for it is installed here "
                            f"({str(e).strip().splitlines()[0]}); {fix}") from e  # fmt: skip


def _check_database(uri: str) -> None:
    """Fail within seconds, before any run exists, when the store's database cannot be opened: its
    server is down, or the database, user or password is wrong. MLflow would retry for minutes."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 5}, poolclass=sqlalchemy.pool.NullPool)
    try:
        engine.connect().close()
    except SQLAlchemyError as e:
        cause = str(getattr(e, "orig", e)).strip().splitlines()[0]
        raise TrackingError(
            f"cannot open the database of the MLflow store {shown(uri)} ({cause}); start the database server "
            "(cluster/up.sh starts a local one), fix the URI, or unset MLFLOW_TRACKING_URI for the project's mlflow.db"
        ) from e
    finally:
        engine.dispose()


def _explain(uri: str, error: Exception) -> str:
    text = str(error)
    cause = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if "readonly database" in text:
        return (f"the MLflow store {uri} is read-only (attempt to write a readonly database); make the file "
                "and its folder writable, or point MLFLOW_TRACKING_URI at a writable store")  # fmt: skip
    if "database is locked" in text:
        return (f"the MLflow store {uri} is locked by another process ({cause}); close whatever holds it "
                "(an open sqlite3 shell, a stuck process) and run again")  # fmt: skip
    if "file is not a database" in text or "malformed" in text:
        return (f"{uri} is not a usable MLflow database ({cause}); move it aside (e.g. mv mlflow.db "
                "mlflow.db.broken) and run again to start a fresh store")  # fmt: skip
    if "disk is full" in text or "No space left" in text:
        return (f"no space left for the MLflow store {uri} ({cause}); free some space there, or point "
                "MLFLOW_TRACKING_URI at another disk; no half-written store was left")  # fmt: skip
    if isinstance(error, OSError) or "unable to open database file" in text:
        return (f"cannot create or open the MLflow store {uri} ({cause}); point MLFLOW_TRACKING_URI at a "
                "writable folder, e.g. sqlite:////absolute/path/mlflow.db")  # fmt: skip
    return f"the MLflow store {uri} failed: {cause}"


# How long the tracking server's API may take to answer the first question a run asks it.
SERVER_ANSWER_SECONDS = 10


def _check_server(uri: str, experiment_name: str) -> None:
    """Fail fast, before any run exists, when the tracking server does not answer, or answers its
    /health but not its API (stuck, failing, or on a locked database): one question, no retries.

    MLflow's own requests retry a dead or failing server for minutes (7 retries with backoff): too
    long to wait for at the start, but once the server has answered, that patience is what lets a
    run outlive a server restarted mid-sweep. A server that turns sick mid-run is `watch_server`'s.
    """
    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
            response.read()
    except OSError as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}); start it (mlflow server --host "
            "127.0.0.1 --port ...) or unset MLFLOW_TRACKING_URI to use the project's mlflow.db"
        ) from e
    query = urllib.parse.urlencode({"experiment_name": experiment_name})
    try:
        symptom = _api_symptom(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", SERVER_ANSWER_SECONDS)
    except ConnectionError as e:
        symptom = f"its API dropped the connection ({e})"
    if symptom:
        raise TrackingError(
            f"the MLflow tracking server at {uri} answers /health, but {symptom}; it, or the database behind "
            "it, is stuck or failing: look at the server's log, restart it, or unset MLFLOW_TRACKING_URI"
        )


def _api_symptom(url: str, timeout: float) -> str | None:
    """Ask a tracking server's REST API `url` once: None when it answers (an HTTP status below 500 is
    an answer too: 404, no such experiment), else what it did instead. A refused or dropped
    connection is raised (a ConnectionError): the server is down, which is not the same as sick."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
        return None
    except urllib.error.HTTPError as e:
        if e.code < 500:
            return None
        try:
            said = str(json.loads(e.read()).get("message", ""))  # MLflow's own errors are JSON
        except (ValueError, AttributeError, OSError):
            said = ""  # an HTML error page, say
        return f"its API answered HTTP {e.code} ({' '.join(said.split())[:200] or e.reason})"
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionError):
            raise e.reason from e
        return f"its API did not answer within {timeout:g} s ({e.reason})"
    except ConnectionError:
        raise
    except OSError as e:  # a timeout while reading the answer
        return f"its API did not answer within {timeout:g} s ({e})"
    except http.client.HTTPException as e:  # an answer cut short, or not HTTP
        return f"its API sent a broken answer ({type(e).__name__})"


# A tracking server that turns sick mid-run (its API stuck, failing, or on a locked database) would hold
# the run in MLflow's retries for minutes. While a run is open, `watch_server` asks the server about it
# every SERVER_PROBE_SECONDS; once every answer for SERVER_SICK_SECONDS has been a failure, the run stops
# with one line, well within 30 s of the first failure. A server that refuses connections is down,
# perhaps for a restart, which MLflow's retries outlast: that is left to them.
SERVER_PROBE_SECONDS = 2.0
SERVER_PROBE_TIMEOUT = 5.0
SERVER_SICK_SECONDS = 10.0


# What the first watch to find the server sick saw; `_raise_server_stopped` raises it in the main thread.
# The lock makes a watch's firing and its end (or another watch's firing) one after the other.
_server_trouble: list[str] = []
_server_trouble_lock = threading.Lock()


def _raise_server_stopped(signum, frame):  # noqa: ARG001
    raise errors.ServerStoppedAnswering(_server_trouble[0])


def watch_server(run_id: str) -> Callable[[], None]:
    """Against a tracking server, watch it from a thread while run `run_id` is open; return what ends
    the watch. When the server is found sick, MLflow's later requests in this process are made once,
    each bounded by SERVER_PROBE_TIMEOUT (so that ending the run cannot hang in turn), and
    errors.ServerStoppedAnswering is raised in the main thread, through SIGALRM, which also ends a
    request of its stuck in a socket. (A sweep's parent and a job of the basic launcher, in the same
    process, each have a watch; either one may find the server sick first.)"""
    uri = mlflow.get_tracking_uri()
    if not is_server(uri) or threading.current_thread() is not threading.main_thread():
        return lambda: None
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/runs/get?{urllib.parse.urlencode({'run_id': run_id})}"
    stop = threading.Event()

    def watch() -> None:
        failing_since = None
        while not stop.wait(SERVER_PROBE_SECONDS):
            asked = time.monotonic()
            try:
                symptom = _api_symptom(url, SERVER_PROBE_TIMEOUT)
            except ConnectionError:
                symptom = None  # down, not sick
            if symptom is None:
                failing_since = None
                continue
            failing_since = failing_since or asked
            if time.monotonic() - failing_since >= SERVER_SICK_SECONDS:
                break
        with _server_trouble_lock:
            if stop.is_set() or _server_trouble:
                return
            _server_trouble.append(
                f"the MLflow tracking server at {shown(uri)} stopped answering mid-run: {symptom}, for "
                f"{time.monotonic() - failing_since:.0f} s; it, or the database behind it, is stuck or failing: "
                "look at the server's log and restart it"
            )
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = f"{SERVER_PROBE_TIMEOUT:.0f}"
            signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, _raise_server_stopped)
    threading.Thread(target=watch, name=f"server-watch-{run_id}", daemon=True).start()

    def unwatch() -> None:
        with _server_trouble_lock:
            stop.set()
        signal.signal(signal.SIGALRM, previous)

    return unwatch


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]).resolve() if uri.startswith(prefix) else None


def _experiment_exists(db: Path, name: str) -> bool:
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return con.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:
        return False  # not initialised yet: take the lock and let MLflow do it


def _file_kind(path: Path) -> str:
    """What `path` is, when it is not a regular file: "a directory", "a character device", ..."""
    mode = path.stat().st_mode
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")]  # fmt: skip
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _prepare_store(db: Path) -> None:
    """Make `db` a complete MLflow store of this MLflow's schema, or say why it cannot be.

    A new store is created and migrated under a temporary name, then renamed into place, so
    an interrupt or a full disk during the ~1 s of migration leaves no store rather than a
    half-migrated one, which MLflow could never open again. Only a file with nothing in it (made
    by `touch`, say) is replaced; any other file is never moved, replaced or changed: another
    program's database, or a store of another MLflow schema, is refused with the fix named.
    Call under the store's lock.
    """
    if not _is_complete_store(db):
        _create_store(db)


def _is_complete_store(db: Path) -> bool:
    """Whether `db` is a complete MLflow store of this MLflow's schema; False when there is no file
    or an empty one, which a new store may take the place of. Anything else raises TrackingError."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    if not db.exists() or db.stat().st_size == 0:
        return False
    version, runs = _store_schema_and_runs(db)
    head = _get_latest_schema_revision()
    if version != head:
        raise TrackingError(
            f"{db} has MLflow schema {version} and {runs} runs, but MLflow {metadata.version('mlflow')} needs "
            f"schema {head}: back it up, then run `mlflow db upgrade sqlite:///{db}`, or point "
            "MLFLOW_TRACKING_URI at another file to start a fresh store"
        )
    return True


def _store_schema_and_runs(db: Path) -> tuple[str, int]:
    """The MLflow schema version of the SQLite file `db`, and how many runs it holds; TrackingError
    when it is a database but not an MLflow store (another program's)."""
    version, runs, tables = _schema_and_runs(db)
    if version is None or not {"experiments", "runs"} <= tables:
        listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "") if tables else "none"
        raise TrackingError(
            f"{db} is an SQLite database but not an MLflow store (its tables: {listed}); it is left as it is: "
            "point MLFLOW_TRACKING_URI at another file, e.g. sqlite:////absolute/path/mlflow.db"
        )
    return version, runs


def _create_store(db: Path) -> None:
    building = db.with_name(f".{db.name}.building")
    building.unlink(missing_ok=True)  # left by a creation that was killed
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = SqlAlchemyStore(f"sqlite:///{building}", (db.parent / "mlruns").as_uri())
        store.engine.dispose()
        os.replace(building, db)
    finally:
        building.unlink(missing_ok=True)


# How long opening a store waits for another process's write lock before saying so. (Each
# write of a run waits longer, 20 s, MLflow's own setting: see END_RUN_RETRY_SECONDS.)
LOCK_WAIT_SECONDS = 5


def _check_writable(db: Path) -> None:
    """Raise sqlite3.Error at once (within LOCK_WAIT_SECONDS) when `db` is locked or read-only."""
    with closing(sqlite3.connect(db, timeout=LOCK_WAIT_SECONDS)) as con:
        con.execute("BEGIN IMMEDIATE")  # takes the write lock, as a run's first write would
        (version,) = con.execute("PRAGMA user_version").fetchone()
        con.execute(f"PRAGMA user_version = {version}")  # a write, undone: a read-only file refuses it
        con.rollback()


def _schema_and_runs(db: Path) -> tuple[str | None, int, set[str]]:
    """The alembic schema version of an SQLite database (None when it has none), how many MLflow
    runs it holds, and its tables."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = (
            con.execute("SELECT version_num FROM alembic_version").fetchone() if "alembic_version" in tables else None
        )
        runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    return (version[0] if version else None), runs, tables


# How long a run waits for another process creating the store before it says so (and waits on).
CREATION_WAIT_SECONDS = 10


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold the store's creation lock, `path`, which records its holder's PID.

    A holder that dies releases it (the kernel drops a dead process's locks). One that is stopped
    (Ctrl-Z) holds it for good: that is refused at once, naming it; one that is only slow is waited
    for, with a line after CREATION_WAIT_SECONDS.
    """
    with open(path, "a+") as handle:
        began, said = time.monotonic(), False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _lock_holder(path)
                if holder is not None and _stopped(holder):
                    raise TrackingError(
                        f"process {holder.pid} is creating the MLflow store {path.with_suffix('')} and is stopped "
                        f"(Ctrl-Z?); resume it (fg, or kill -CONT {holder.pid}) or end it, then run again"
                    ) from None
                if not said and time.monotonic() - began > CREATION_WAIT_SECONDS:
                    log.warning("waiting for process %s, which is creating the MLflow store %s",
                                holder.pid if holder else "?", path.with_suffix(""))  # fmt: skip
                    said = True
                time.sleep(0.1)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        except OSError:
            pass  # a full disk: the lock holds all the same; only its holder's PID is not recorded
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stopped(process) -> bool:
    import psutil

    try:
        return process.status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def _lock_holder(path: Path):
    """The live process whose PID the lock file records, or None."""
    import psutil

    try:
        return psutil.Process(int(path.read_text().strip()))
    except (OSError, ValueError, psutil.NoSuchProcess):
        return None


# `mlflow ui` opens an experiment of this kind on its runs table, not on the GenAI pages.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location, tags=dict([EXPERIMENT_KIND]))
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment '{name}' is deleted; restore it with "
            f"`mlflow experiments restore --experiment-id {experiment.experiment_id}`, or choose another "
            "name with experiment_name=..."
        )
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:  # made by an older version
        client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return experiment.experiment_id


# System metrics (CPU, memory) cost a sampler thread: worth it only when it records a handful of points.
SYSTEM_METRICS_MIN_SECONDS = 5.0
SYSTEM_METRICS_POINTS = 10


@contextmanager
def tracked_run(
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
    expected_seconds: float = 0.0,
) -> Iterator[str]:
    """Start an MLflow run (nested under `parent_run_id` when given) and yield its id.

    MLflow's own `start_run` adds its source, user and git tags. A run expected to take
    `SYSTEM_METRICS_MIN_SECONDS` or more also logs system metrics, sampled often enough for
    about `SYSTEM_METRICS_POINTS` points. The run ends FINISHED, KILLED on an interrupt, else
    FAILED with the error in its `error` tag.
    """
    system_metrics = expected_seconds >= SYSTEM_METRICS_MIN_SECONDS
    if system_metrics:
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # "Started monitoring ...": noise
        mlflow.set_system_metrics_sampling_interval(max(1.0, expected_seconds / SYSTEM_METRICS_POINTS))
        mlflow.set_system_metrics_samples_before_logging(1)
    # A Ctrl-C or SIGTERM while start_run is still at work, after it has created the run, would
    # leave the run RUNNING: such a signal is held until the `try` below can end the run KILLED.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            tags=dict(tags),
            parent_run_id=parent_run_id,
            log_system_metrics=system_metrics,
        )
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    status, server_stopped = RunStatus.FAILED, None
    beating, unwatch = heartbeat(run.info.run_id), watch_server(run.info.run_id)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal held above is handled here
        yield run.info.run_id
        errors.stop_if_interrupted()
        status = RunStatus.FINISHED
    except KeyboardInterrupt:
        errors.unwinding()
        status = RunStatus.KILLED
        raise
    except errors.ServerStoppedAnswering as e:
        server_stopped = e
        raise
    except Exception as e:
        try:
            mlflow.set_tag("error", str(e)[:5000])  # shown on the run's page in `mlflow ui`
        except STORE_ERRORS:
            pass  # the store itself failed: the error that reaches the console says how
        raise
    finally:
        beating.set()
        if server_stopped is None:
            _end_run(RunStatus.to_string(status))
        else:  # one try, bounded (see watch_server)
            try:
                mlflow.end_run(RunStatus.to_string(status))
            except STORE_ERRORS:
                told = f"it was not told that run {run.info.run_id} ended"
                server_stopped.args = (f"{server_stopped}; {told}: if it stays RUNNING there, the next run in its "
                                       "experiment ends it KILLED",)  # fmt: skip
        unwatch()


# A RUNNING run's owner on another host, outside Slurm, cannot be asked whether it is alive: it
# tags the run with the time every HEARTBEAT_SECONDS instead, and `close_stale_runs` ends a run
# that has given no sign of life (heartbeat, or its start) for SILENT_AFTER_SECONDS.
HEARTBEAT_TAG = "owner.heartbeat"
HEARTBEAT_SECONDS = 60.0
SILENT_AFTER_SECONDS = 15 * 60


def heartbeat(run_id: str) -> threading.Event:
    """Tag run `run_id` with the time (HEARTBEAT_TAG) every HEARTBEAT_SECONDS, from a thread of its own,
    until the returned event is set."""
    stop, client = threading.Event(), current_client()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
            except STORE_ERRORS:
                pass  # a store that fails fails the run's own writes too, which say so

    threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True).start()
    return stop


# Each write to a locked SQLite store waits up to 20 s (the busy timeout MLflow sets). A run
# whose logging failed that way still has to be ended: that is retried for up to this long.
END_RUN_RETRY_SECONDS = 60


def _end_run(status: str) -> None:
    """End the active run with `status`, retrying while the store is locked; past the deadline the
    run stays RUNNING until the next run ends it (see `close_stale_runs`)."""
    deadline = time.monotonic() + END_RUN_RETRY_SECONDS
    while True:
        try:
            mlflow.end_run(status)
            return
        except STORE_ERRORS as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def standard_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """`tags` plus MLflow's own source, user and git tags, for a run made with the client API."""
    from mlflow.tracking.context.registry import resolve_tags

    return resolve_tags(dict(tags))


def log_dataset(run_id: str, x: np.ndarray, y: np.ndarray, name: str, context: str, source: str | None):
    """(x, y) as one of the run's dataset inputs: its digest, shape and `source` (a DVC path) in the
    Dataset column. Returns the dataset, which `scores` links metrics to."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():  # MLflow 3.17 registers its local-file source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(x, targets=y, source=source, name=name)
    entry = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
    MlflowClient(tracking_uri()).log_inputs(run_id, datasets=[entry])
    return dataset


MODEL_CODE = Path(__file__).with_name("model.py")


def log_model(model, w: float, b: float, x_example: np.ndarray) -> str:
    """The fit as an MLflow pyfunc model `model` of the active run; returns its id (`m-...`; its
    models:/ URI is tagged on the run).

    The model is `src/model.py`, logged as code, with the model module (src/models/) as its artifact
    `formula` and w and b in its artifact `fit.json`: loading it needs numpy and mlflow only, not
    this repository.
    """
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"x": np.asarray(x_example, dtype=np.float64)})
    prediction = models.values(model, example["x"].to_numpy(), w, b)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)  # "Validating input example ...", every run
    with tempfile.TemporaryDirectory(prefix="model-") as private:
        code, fit = Path(private) / MODEL_CODE.name, Path(private) / "fit.json"  # made here, so with the mode
        code.write_bytes(MODEL_CODE.read_bytes())  # the umask gives: MLflow copies each file's own mode
        formula = Path(private) / Path(model.__file__).name
        formula.write_bytes(Path(model.__file__).read_bytes())
        fit.write_text(json.dumps({"w": float(w), "b": float(b)}))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"fit": str(fit), "formula": str(formula)},
            signature=infer_signature(example, prediction),
            input_example=example,
            pip_requirements=[f"mlflow=={metadata.version('mlflow')}", f"numpy=={metadata.version('numpy')}"],
        )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_id


MODEL_URI_TAG = "model_uri"  # the models:/m-... URI of the run's logged model


HELD_OUT_TAG = "held_out_sha256"  # on a run and its model's versions: the data its test_mse was measured on
BEST_ALIAS = "best"


class Registration(NamedTuple):
    version: str
    best: bool  # whether the new version took @best
    why: str


def register_model(run_id: str, name: str) -> Registration:
    """Register run `run_id`'s model as a new version of `name`; move `@best` to it only if it is better.

    Better means a lower held-out MSE (`test_mse`) than the version that holds `@best`, measured
    on the same held-out data (`HELD_OUT_TAG`, a digest of it). A model scored on other data is
    not compared, and does not take `@best`. Every new version is `models:/<name>/latest` (MLflow's
    own name for the newest) until the next. The console says what the version got, and why.
    """
    client = MlflowClient(tracking_uri())
    run = client.get_run(run_id)
    score, data = run.data.metrics["test_mse"], run.data.tags[HELD_OUT_TAG]
    holder = _version_with_alias(client, name, BEST_ALIAS)
    with redirect_stderr(io.StringIO()) as printed:  # "Successfully registered model ...", print()ed
        version = mlflow.register_model(
            run.data.tags[MODEL_URI_TAG], name, await_registration_for=0,  # ready at once here
            tags={HELD_OUT_TAG: data, "test_mse": repr(score)},
        ).version  # fmt: skip
    for line in printed.getvalue().splitlines():
        if not line.startswith(("Successfully registered model", "Registered model", "Created version")):
            log.warning("%s", line)
    client.update_model_version(name, version, description=_version_description(run, score))
    best, why = _takes_best(score, data, holder)
    if best:
        client.set_registered_model_alias(name, BEST_ALIAS, version)
    log.info("registered models:/%s version %s (models:/%s/latest); %s", name, version, name, why)
    return Registration(str(version), best, why)


def _version_description(run, score: float) -> str:
    """One line for a model version's page: what fitted it, on which data, how it scored, and who registered it."""
    params, tags = run.data.params, run.data.tags
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}  # as the runs table shows them
    user = tags.get("mlflow.user") or getpass.getuser()
    fit = f"{params.get('backend.name')} lr={params.get('lr')} objective={params.get('objective')}"
    data = f"training data {digests.get('train', 'unknown')}, held-out data {digests.get('test', 'unknown')}"
    return f"{fit}; {data}; held-out MSE {score:.6g}; registered by {user}"


def _version_with_alias(client: MlflowClient, name: str, alias: str):
    """The model version of `name` that holds `alias`, or None (no such model, or no version holds it)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def _takes_best(score: float, data: str, holder) -> tuple[bool, str]:
    """Whether a version scored `score` on held-out data `data` takes @best from `holder`, and why, as a phrase."""
    if holder is None:
        return True, f"it takes @best (held-out MSE {score:.6g}): no version held it"
    held_by, recorded = f"version {holder.version}", holder.tags.get(HELD_OUT_TAG)
    if recorded is None:
        return (
            True,
            f"it takes @best (held-out MSE {score:.6g}) from {held_by}, which has no record of its held-out data",
        )
    if recorded != data:
        return False, (f"not @best: {held_by} holds it, scored on other held-out data ({recorded[:12]}, this one "
                       f"{data[:12]}); scores on different data are not compared")  # fmt: skip
    old = float(holder.tags["test_mse"])
    if score < old:
        return True, f"it takes @best: held-out MSE {score:.6g} beats {held_by}'s {old:.6g}"
    return False, f"not @best: held-out MSE {score:.6g} does not beat {held_by}'s {old:.6g}, which keeps it"


def browse_hint() -> str:
    """One line saying how to open the store in `mlflow ui`."""
    uri = tracking_uri()
    if is_server(uri):
        return f"to browse it: open {uri}"
    if uri != default_uri():
        return f"to browse it: mlflow ui --backend-store-uri {uri}   (then open http://127.0.0.1:5000)"
    return f"to browse it: cd {project_root()} && make ui   (or mlflow ui, then open http://127.0.0.1:5000)"


def run_link(run_id: str, experiment_id: str) -> str:
    """The run's page in `mlflow ui` (or on the tracking server)."""
    uri = tracking_uri()
    base = uri.rstrip("/") if is_server(uri) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def latest_run_tagged(client: MlflowClient, experiment_name: str, key: str, value: str) -> str | None:
    """The id of the newest run in `experiment_name` whose tag `key` is `value`, or None."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{key}` = '{value}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def run_tags(backend: str, device: str) -> dict[str, str]:
    """A training run's tags: its provenance, and the backend and device that did the math."""
    return {**provenance_tags(), "backend": backend, "device": device}


def provenance_tags() -> dict[str, str]:
    """The git state of the project, the locked packages, the machine, and who runs it (`owner_tags`)."""
    commit, dirty = _git_state(CODE_ROOT)  # the code that ran, which in a DVC temp run is the copy
    return {
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "numpy_version": metadata.version("numpy"),
        "torch_version": metadata.version("torch"),
        "requirements_md5": _md5_or_unknown(CODE_ROOT / "requirements.lock"),
        "cpu": _cpu_model(),
        "blas": _blas(),
        **owner_tags(),
    }


def owner_tags() -> dict[str, str]:
    """Who runs this: host, PID and the process's start time (a PID alone can be reused), and
    the Slurm job, if any. `close_stale_runs` reads them to tell a live run from an orphan."""
    import psutil

    me = psutil.Process()
    tags = {"owner.host": socket.gethostname(), "owner.pid": str(me.pid), "owner.started": f"{me.create_time():.3f}"}
    if job := slurm_job():
        tags["owner.slurm_job"] = job
    return tags


def slurm_job() -> str | None:
    """This process's Slurm job as squeue shows it and scancel takes it: `<array job>_<task>` for a
    task of an array (scancel refuses a task's own SLURM_JOB_ID), else SLURM_JOB_ID; None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def close_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """End, as KILLED, every RUNNING run in the experiment whose owner is gone; return their ids.

    A run is only left RUNNING by a process that died without unwinding: SIGKILL, the OOM
    killer, a lost node. How its owner is judged:
    - on this host: gone when no process has its PID and start time;
    - on another host, as a Slurm job (`owner.slurm_job`): gone when Slurm no longer lists the job;
    - on another host otherwise (a container, another machine): gone after SILENT_AFTER_SECONDS
      with no heartbeat (HEARTBEAT_TAG, or its start when it has none), by this host's clock;
    - with no owner tags (an older run): never touched.
    The `error` tag says how the end was found, and the run's leftover temporary files
    (in its `output_dir`) are removed.
    """
    stale = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        reason = _owner_gone(run.data.tags)
        if reason is None:
            continue
        client.set_tag(
            run.info.run_id, "error", f"left RUNNING: {reason}; ended by a later run on {socket.gethostname()}"
        )
        client.set_terminated(run.info.run_id, "KILLED")
        if Path(run.data.tags.get("output_dir", "")).is_absolute():  # not hidden (src.train.HIDDEN_FOLDER)
            datafiles.remove_partial_files(Path(run.data.tags["output_dir"]))
        stale.append(run.info.run_id)
    if stale:
        log.warning(
            "ended %d MLflow run(s) left RUNNING by a process that is gone, as KILLED: %s",
            len(stale),
            ", ".join(stale),
        )
    return stale


def _owner_gone(tags: Mapping[str, str]) -> str | None:
    """Why a RUNNING run's owner is known to be gone, or None when it may be alive."""
    import psutil

    host, pid, started = tags.get("owner.host"), tags.get("owner.pid"), tags.get("owner.started")
    if not (host and pid and started):
        return None
    if host == socket.gethostname():
        try:
            alive = abs(psutil.Process(int(pid)).create_time() - float(started)) < 0.01
        except (psutil.NoSuchProcess, ValueError):
            alive = False
        return None if alive else f"its process {pid} on {host} is gone"
    job = tags.get("owner.slurm_job")
    if job:
        return f"its Slurm job {job} on {host} has ended" if _slurm_job_ended(job) else None
    try:
        last_sign = max(float(started), float(tags.get(HEARTBEAT_TAG, 0)))
    except ValueError:
        return None
    silent = time.time() - last_sign
    if silent > SILENT_AFTER_SECONDS:
        return f"no heartbeat from its process {pid} on {host} for {silent / 60:.0f} min"
    return None


def _slurm_job_ended(job: str) -> bool:
    try:
        done = subprocess.run(["squeue", "--noheader", "--jobs", job], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False  # no Slurm here to ask: assume alive
    return done.returncode == 0 and not done.stdout.strip() or "Invalid job id" in done.stderr


# Files the pipeline writes after training, from its results: they differ from the commit
# whenever a result does, but no result depends on them, so they do not make a run "dirty".
# (params.yaml is written by the `params` stage too, but every result depends on it.)
PIPELINE_RESULTS = ("dvc.lock", "metrics.json")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _git_state(root: Path) -> tuple[str, bool]:
    """The commit at HEAD, and whether any file that can change a result differs from it."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        changed = _git(root, "status", "--porcelain", "--untracked-files=all").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return commit, any(line[3:].strip('"') not in PIPELINE_RESULTS for line in changed)


def code_version() -> str:
    """The code that runs: the commit at HEAD, plus, when the tree is dirty, a digest of its uncommitted
    changes (edits to tracked files and untracked files' contents), so that two different edits of one
    commit never pass for the same code. A resumed sweep reuses a job's run only for the same version."""
    commit, dirty = _git_state(CODE_ROOT)
    if not dirty:
        return commit
    digest = hashlib.sha256()
    try:
        excluded = [f":(exclude){name}" for name in PIPELINE_RESULTS]
        digest.update(_git(CODE_ROOT, "diff", "HEAD", "--binary", "--", ".", *excluded).encode())
        for name in _git(CODE_ROOT, "ls-files", "--others", "--exclude-standard", "-z").split("\0"):
            if name and (CODE_ROOT / name).is_file():
                digest.update(name.encode() + b"\0" + (CODE_ROOT / name).read_bytes())
    except (OSError, subprocess.CalledProcessError):
        return "unknown"  # no git to ask: the code cannot be told apart
    return f"{commit}+{digest.hexdigest()[:16]}"


def _md5_or_unknown(path: Path) -> str:
    try:
        return datafiles.md5(path)
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    """The CPU's model name, as Linux reports it: the numpy backend's bits may depend on nothing
    else, and a BLAS kernel's do."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def _blas() -> str:
    """The BLAS library numpy loaded, its version and the kernel it chose for this CPU."""
    from threadpoolctl import threadpool_info

    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(f"{i['internal_api']} {i['version']} {i.get('architecture', '')}".strip() for i in found) or "none"


def log_files(client: MlflowClient, run_id: str, files: Mapping[str, bytes]) -> None:
    """`files` ({name: bytes}) as artifacts of run `run_id`, copied from a temporary folder of this
    process's own: never from a folder that another run could be writing into."""
    with tempfile.TemporaryDirectory(prefix="run-files-") as private:
        for name, content in files.items():
            path = Path(private) / name
            path.write_bytes(content)  # with the mode the umask gives, which the artifact copy keeps
            client.log_artifact(run_id, str(path))


# MLflow's run page draws a section of charts for each prefix before the last "/", in character
# order, and then "Model metrics", which holds every metric without one. So the curves of training
# are `train/loss`, `train/log10_loss`, `train/w`, `train/b`, and come first; the single values that
# score a fit (`final_loss`, `test_mse`, ...) have no prefix, and come after them, with the names
# that search filters and the runs table's columns use (`metrics.test_mse < 0.01`).
CURVE = "train/"


def curves(history: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: series} with their metric keys."""
    return {CURVE + name: series for name, series in history.items()}


def scores(values: Mapping[str, float], model_id: str | None = None, dataset=None) -> list[Metric]:
    """Single values; those about a fit linked to its model `model_id` and to the dataset they were
    measured on, so that the experiment's Models tab shows them per model, with their data."""
    now = int(time.time() * 1000)
    link = {"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset is not None else {}
    return [Metric(key, float(value), now, 0, model_id=model_id, **link) for key, value in values.items()]


def model_id(run) -> str | None:
    """The id of the model a run logged (from its models:/m-... tag), or None."""
    uri = run.data.tags.get(MODEL_URI_TAG)
    return uri.removeprefix("models:/") if uri else None


def log_params_and_history(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, object],
    history: Mapping[str, np.ndarray],
    final: list[Metric],
    steps: np.ndarray | None = None,
) -> None:
    """Every step of every series in `history` (at step numbers `steps`, else 0, 1, ...), the
    `final` values (from `scores`) and the params, in one batch.

    One `log_batch` instead of a call per value: on SQLite, 2,400 values take about
    0.3 s this way and about 8 s one at a time.
    """
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, int(step))
        for key, values in history.items()
        for step, value in zip(range(len(values)) if steps is None else steps, values, strict=True)
    ]
    metrics += final
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
