"""Nothing phones home by default: a run, a sweep and `dvc repro` connect to no address outside
127.0.0.0/8 (the store here is a local file; a tracking server would be the one exception).

Every Python process they start (the CLI, sweep jobs, `dvc` and its stages) loads a
`sitecustomize` that records each name looked up and each address connected to, through
Python's audit hooks. They run in a user's plain environment, not pytest's, since MLflow
turns its telemetry off by itself where it sees a test runner or a CI system."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT

pytestmark = pytest.mark.slow

RECORDER = """
import os, sys

def _record(event, args):
    if event in ("socket.getaddrinfo", "socket.connect"):
        with open(os.environ["NETWORK_LOG"], "a") as log:
            log.write(f"{event} {args[0] if event == 'socket.getaddrinfo' else args[1]!r}\\n")

with open(os.environ["NETWORK_LOG"], "a") as log:
    log.write("process started\\n")
sys.addaudithook(_record)
"""


def _plain_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment: PATH (this venv first), HOME, a locale; and the recorder."""
    (tmp_path / "recorder").mkdir(exist_ok=True)
    (tmp_path / "recorder" / "sitecustomize.py").write_text(RECORDER)
    return {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
            "LANG": "C.UTF-8", "PYTHONPATH": str(tmp_path / "recorder"),
            "NETWORK_LOG": str(tmp_path / "network.log"), **extra}  # fmt: skip


def _outside(log: Path) -> list[str]:
    """The names looked up and addresses connected to that are not this machine's loopback."""
    found = []
    for line in log.read_text().splitlines():
        event, target = line.split(" ", 1)
        if event == "process":
            continue
        host = target if event == "socket.getaddrinfo" else (eval(target) if target.startswith("(") else None)  # noqa: S307
        host = host[0] if isinstance(host, tuple) else host
        if host in (None, "None", "localhost", "''") or _loopback(str(host).strip("'")):
            continue
        found.append(line)
    return found


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "")


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_run_a_sweep_and_dvc_repro_connect_to_nothing_outside_this_machine(tmp_path, repo):
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env = _plain_env(tmp_path, **store)
    _run([sys.executable, "-m", "src.train", "steps=5", f"hydra.run.dir={tmp_path / 'run'}"], ROOT, env)
    _run([sys.executable, "-m", "src.train", "-m", "lr=0.001,0.002", "steps=5", f"hydra.sweep.dir={tmp_path / 's'}"],
         ROOT, env)  # fmt: skip
    _run([str(BIN / "dvc"), "repro", "-q"], repo, _plain_env(tmp_path))
    log = tmp_path / "network.log"
    # the run, the sweep, dvc and its four stages, at least: each was watched
    assert log.read_text().count("process started") >= 7, log.read_text()
    assert _outside(log) == []

    # The check can fail: with MLflow's telemetry turned on, a run looks up its server.
    log.unlink()
    on = _plain_env(tmp_path, MLFLOW_DISABLE_TELEMETRY="false", **store)
    _run([sys.executable, "-m", "src.train", "steps=5", f"hydra.run.dir={tmp_path / 'on'}"], ROOT, on)
    assert any("mlflow-telemetry" in line for line in _outside(log)), log.read_text()
