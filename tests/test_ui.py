"""`make ui`: a real `mlflow ui` on a real store, one worker and no job consumers, stopped by Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest

from tests.conftest import free_port, rest, run_cli


@pytest.mark.slow
def test_make_ui_serves_the_runs_table_light_and_stops_on_ctrl_c(tmp_path, tracking_env):
    assert run_cli("steps=5", cwd=tmp_path, env=tracking_env).returncode == 0
    port = free_port()
    store = tracking_env["MLFLOW_TRACKING_URI"]
    ui = subprocess.Popen([sys.executable, "-m", "src.ui", "--port", str(port), "--store", store],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=tracking_env)  # fmt: skip
    try:
        link = next(line for line in ui.stdout if line.startswith("MLflow UI: ")).split()[2]
        url = f"http://127.0.0.1:{port}"
        experiment = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=autograd-fit")["experiment"]
        assert link == f"{url}/#/experiments/{experiment['experiment_id']}/runs"
        [run] = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert run["info"]["status"] == "FINISHED"
        tree = psutil.Process(ui.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in tree]
        assert len(tree) == 2 and "--workers 1" in commands[0], commands  # mlflow ui and one uvicorn worker
        assert not any("huey" in c or "jobs" in c for c in commands), commands  # no job consumers
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=60)
    assert ui.returncode == 0
    assert psutil.wait_procs(tree, timeout=30)[1] == []
