"""`make ui`: a real `mlflow ui` on a real store, one worker and no job consumers, stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from src.errors import UserError
from src.ui import default_store
from tests.conftest import ROOT, free_port, rest, train_here


@pytest.mark.slow
def test_make_ui_serves_the_runs_table_light_and_stops_on_ctrl_c(tmp_path, tracking_env):
    train_here("steps=5", output_dir=tmp_path / "out")
    port = free_port()
    store = tracking_env["MLFLOW_TRACKING_URI"]  # where the run went, and so what the UI serves without --store
    ui = subprocess.Popen([sys.executable, "-m", "src.ui", "--port", str(port)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=tracking_env, start_new_session=True)  # fmt: skip
    try:
        first = ui.stdout.readline()
        link = first.split()[2]
        url = f"http://127.0.0.1:{port}"
        experiment = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=autograd-fit")["experiment"]
        assert link == f"{url}/#/experiments/{experiment['experiment_id']}/runs"
        [run] = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert run["info"]["status"] == "FINISHED"
        tree = psutil.Process(ui.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in tree]
        assert len(tree) == 2 and "--workers 1" in commands[0], commands  # mlflow ui and one uvicorn worker
        assert f"--backend-store-uri {store} " in commands[0], commands
        assert not any("huey" in c or "jobs" in c for c in commands), commands  # no job consumers
    finally:
        os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C in a terminal: to the whole foreground group
        rest_of_stdout, stderr = ui.communicate(timeout=60)
    assert ui.returncode == 0
    # Quiet: the link, then one line on Ctrl-C; no access log, start-up notes, warnings or tracebacks.
    assert [first, *rest_of_stdout.splitlines(keepends=True)] == [f"MLflow UI: {link}   (Ctrl-C stops it)\n",
                                                                   "stopped mlflow ui\n"]  # fmt: skip
    assert stderr == ""
    assert psutil.wait_procs(tree, timeout=30)[1] == []


def test_the_ui_serves_the_store_runs_go_to_and_points_at_a_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_store() == f"sqlite:///{ROOT / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////data/runs.db")
    assert default_store() == "sqlite:////data/runs.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:55000")
    with pytest.raises(UserError, match=r"tracking server http://127.0.0.1:55000, which serves its own UI: open"):
        default_store()
