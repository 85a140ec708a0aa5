"""Shared fixtures: the real composed config, a private MLflow store, and the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def backend_module(name: str):
    """The module of the backend conf/backend/NAME.yaml names."""
    from src import backends, usage

    return backends.load(usage.options("backend")[name])


def book_fit(backend: str, x, y, w0: float, b0: float, **options):
    """`fit` of the backend named `backend` on the book's model, src/models/quadratic.py."""
    from src.models import quadratic

    return backend_module(backend).fit(quadratic, x, y, w0, b0, **options)


def compose_config(*overrides: str) -> DictConfig:
    """conf/config.yaml with `overrides`, composed by Hydra as `python -m src.train` does."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """mlflow.set_tracking_uri, which src.infra.store_access calls, also sets MLFLOW_TRACKING_URI in os.environ:
    undo both after each test, so that no later test's subprocess inherits a store it did not choose."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    if not os.environ["MLFLOW_TRACKING_URI"]:
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(None)  # back to MLflow's default; monkeypatch then restores the variable


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow store of this MLflow's schema, made once per session as a user's first run makes
    it (src.infra.store_access, by MLflow's own migrations: seconds, about 70 tables). Tests get copies
    (milliseconds)."""
    from src.infra import store_access

    db = tmp_path_factory.mktemp("migrated-store") / "mlflow.db"
    store_access._prepare_store(db)
    return db


def copy_store(template: Path, db: Path) -> None:
    """`template` copied to `db`, which is then what a new store at `db` would be: the one place a store
    names its folder, the Default experiment's artifact location, is moved to `db`'s folder."""
    import sqlite3
    from contextlib import closing

    shutil.copyfile(template, db)
    with closing(sqlite3.connect(db)) as con, con:
        con.execute(
            "UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?) WHERE experiment_id = 0",
            (template.parent.as_uri(), db.parent.as_uri()),
        )


@pytest.fixture
def tracking_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_store: Path) -> dict[str, str]:
    """An environment whose MLflow store is a new, empty SQLite store at tmp_path/mlflow.db (a copy of
    the session's migrated one). Tests of what creates a store use `new_store_env`."""
    copy_store(migrated_store, tmp_path / "mlflow.db")
    return _store_env(tmp_path, monkeypatch)


@pytest.fixture
def new_store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment whose MLflow store, tmp_path/mlflow.db, does not exist yet: the first run creates it."""
    return _store_env(tmp_path, monkeypatch)


def _store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return {**os.environ, "MLFLOW_TRACKING_URI": uri}


def run_cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m src.train ARGS` in `cwd`, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_here(*overrides: str, output_dir: Path) -> float:
    """What `python -m src.train OVERRIDES` does once Hydra has composed its config, run in this
    process (for tests of what a run records, where the process itself is not what is tested)."""
    from src.train import _train_once

    return _train_once(compose_config(*overrides), output_dir)


# Each pytest-xdist worker takes ports from a range of its own, below the kernel's ephemeral ones
# (32768 and up), so that two tests running at once never pick the same port.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
_PORTS = iter(range(20000 + 500 * _WORKER, 20500 + 500 * _WORKER))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, and that no other test of this session is given."""
    for port in _PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"pytest worker {_WORKER} has used all of its 500 ports")


@contextmanager
def mlflow_service(command: str, *args: str, cwd: Path, startup_timeout: float = 90) -> Iterator[str]:
    """Start `mlflow COMMAND --port P ARGS` on 127.0.0.1, yield its URL, stop it by its process group."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [str(mlflow), command, "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow {command} did not come up on {url}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def rest(url: str, path: str, body: dict | None = None) -> dict:
    """GET (or POST `body` as JSON) against MLflow's REST API."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


# A git repository made from the project's files, and real `dvc` in it.

BIN = Path(sys.executable).parent


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    results = {"dvc.lock", "metrics.json"}  # a fresh copy starts without results
    return [f for f in listed if f not in results and (ROOT / f).is_file()]


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository holding the project's files, with one commit, as a fresh clone has."""
    repo = tmp_path / "repo"
    for name in _project_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    # Every DVC remote in .dvc/config (the user's own folder) is a folder under tmp_path here, so
    # that no test pushes to it; .dvc/config.local, where the override lives, is not committed.
    names = re.findall(r"""^\['remote "([^"]+)"'\]""", (repo / ".dvc" / "config").read_text(), re.MULTILINE)
    local = "".join(f"""['remote "{name}"']\n    url = {tmp_path / "dvc-remote" / name}\n""" for name in names)
    (repo / ".dvc" / "config.local").write_text(local)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "project"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    return repo


def run_dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the project's own store
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # stage commands run this environment's python
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def dvc(repo: Path, *args: str) -> str:
    done = run_dvc(repo, *args)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def stages_run(output: str) -> list[str]:
    """The stages that a `dvc repro` printed as run, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def runs(repo: Path):
    """A client for the repository's MLflow store, and its runs, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("autograd-fit")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def run_statuses(db: Path) -> list[str]:
    """The statuses of the runs in an SQLite store, read with plain sqlite3: an MlflowClient here
    would race the set-up of the store by the runs under test."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return [status for (status,) in con.execute("SELECT status FROM runs")]
    except sqlite3.Error:
        return []
