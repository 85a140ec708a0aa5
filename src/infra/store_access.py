"""Opening an MLflow store safely: the tracking URI checked, a new SQLite store created and migrated
by one process at a time (MLflow's migration corrupts a file that several run at once), a locked or
foreign file refused in one line, a sick server told apart from a slow one."""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import sqlite3
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from importlib import metadata
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from src.errors import TrackingError
from src.stores import is_server

log = logging.getLogger(__name__)


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
            return client, _get_or_create_experiment(client, name, artifact_location=None)
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
