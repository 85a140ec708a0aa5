"""Multiruns with every launcher, Optuna search, and a real remote tracking server."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from src.sweep import summarize
from tests.conftest import CONF, free_port, mlflow_service, rest, run_cli, run_statuses

pytestmark = pytest.mark.slow


def _sweep(uri: str):
    """(parent run, child runs) of the one sweep in the store at `uri`."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("autograd-fit")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1, "a run of the sweep is not nested under its parent"
    return client, parent, children


def test_summary_picks_the_lowest_finished_objective():
    rows = [
        {"job": 0, "status": "FINISHED", "objective": 0.3},
        {"job": 1, "status": "FAILED", "objective": float("nan")},
        {"job": 2, "status": "FINISHED", "objective": 0.1},
        {"job": 3, "status": "FINISHED", "objective": float("inf")},
    ]
    summary = summarize(rows)
    assert summary["best"]["job"] == 2 and summary["finished"] == 2 and summary["jobs"] == 4


def test_multirun_nests_every_job_under_one_parent_with_a_summary(tmp_path, tracking_env):
    done = run_cli("-m", "lr=0.001,0.005,0.1", "backend=numpy,torch", cwd=tmp_path, env=tracking_env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parent, children = _sweep(tracking_env["MLFLOW_TRACKING_URI"])
    assert len(children) == 6
    assert parent.info.status == "FINISHED"
    by_job = {int(r.data.tags["sweep_job"]): r for r in children}
    assert sorted(by_job) == list(range(6))
    for run in children:
        assert run.info.status == ("FAILED" if run.data.params["lr"] == "0.1" else "FINISHED")
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert all(len(client.get_metric_history(r.info.run_id, "loss")) == 800 for r in finished)
    lowest = min(r.data.metrics["final_loss"] for r in finished)
    assert parent.data.metrics["best_final_loss"] == lowest
    by_id = {r.info.run_id: r for r in children}
    assert by_id[parent.data.tags["best_run_id"]].data.metrics["final_loss"] == lowest  # ties: either backend
    assert parent.data.metrics["jobs"] == 6 and parent.data.metrics["jobs_finished"] == 4
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"sweep_summary.md", "final_loss_vs_lr.png"}
    # names that tell the jobs apart in the runs table: what varies first
    assert by_job[3].info.run_name == "#3 lr=0.005 torch"
    assert len({r.info.run_name[:15] for r in children}) == 6
    # the best job's model is registered, and the alias names it
    version = client.get_model_version_by_alias("autograd-fit", "best")
    assert version.run_id == parent.data.tags["best_run_id"]
    assert "sweep page: http://127.0.0.1:5000/#/experiments/" in done.stderr + done.stdout
    assert (done.stdout + done.stderr).count("to browse it") <= 1  # once per sweep, not once per job


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_land_every_run_on_a_fresh_database(launcher, tmp_path, tracking_env):
    jobs = "seed=0,1,2,3" if launcher == "joblib" else "seed=0,1"
    extra = ["hydra.launcher.n_jobs=4"] if launcher == "joblib" else []
    done = run_cli("-m", f"hydra/launcher={launcher}", *extra, jobs, cwd=tmp_path, env=tracking_env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parent, children = _sweep(tracking_env["MLFLOW_TRACKING_URI"])
    assert len(children) == len(jobs.split(","))
    assert parent.info.status == "FINISHED"
    for run in children:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 800


def test_slurm_preset_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.timeout_min == 30 and launcher.array_parallelism == 64


def test_optuna_search_is_seeded_and_reproducible(tmp_path, tracking_env):
    best = []
    for attempt in range(2):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        done = run_cli("search=optuna_lr", "hydra.sweeper.n_trials=5", cwd=folder, env=tracking_env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        [line] = [ln for ln in done.stdout.splitlines() if "Best parameters" in ln]
        best.append(line.split("Best parameters:")[1].strip())
        assert "[HYDRA] A new study created" in done.stdout  # Optuna's lines go through Hydra's handlers
        assert "\x1b[" not in done.stdout + done.stderr, "ANSI colour codes in output sent to a file"
        assert done.stdout.count("to browse it:") == 1  # once for the sweep, not once per job
    assert best[0] == best[1]


def test_runs_log_over_http_to_a_real_tracking_server(tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    store = f"sqlite:///{server / 'server.db'}"
    with mlflow_service("server", "--backend-store-uri", store, "--workers", "1", cwd=server) as url:
        env = {**os.environ, "MLFLOW_TRACKING_URI": url}
        done = run_cli("steps=50", cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        experiment = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=autograd-fit")["experiment"]
        [run] = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert run["info"]["status"] == "FINISHED"
        run_id = run["info"]["run_id"]
        history = rest(url, f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss&max_results=1000")
        assert len(history["metrics"]) == 50
        files = rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")["files"]
        assert {f["path"] for f in files} == {"loss.png", "fit.png", "config.yaml", "history.csv"}


def test_an_unreachable_server_fails_fast_and_logs_nothing(tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    started = time.monotonic()
    done = run_cli(cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 30  # seconds, process start-up included; MLflow's own retries take minutes
    assert not list(tmp_path.rglob("*.png")), "outputs were written for a run that was never recorded"


@pytest.mark.parametrize(
    "launcher,signum,to_group",
    [("joblib", signal.SIGTERM, False), ("joblib", signal.SIGINT, True), ("submitit_local", signal.SIGTERM, False)],
    ids=["joblib-SIGTERM-to-main", "joblib-Ctrl-C-to-group", "submitit_local-SIGTERM-to-main"],
)
def test_an_interrupted_parallel_sweep_stops_its_workers_and_ends_every_run_killed(
    launcher, signum, to_group, tmp_path, tracking_env
):
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", "-m", f"hydra/launcher={launcher}", "lr=0.001,0.002", "steps=3000000"],
        cwd=tmp_path, env=tracking_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    db, deadline = tmp_path / "mlflow.db", time.monotonic() + 120
    while run_statuses(db).count("RUNNING") < 3:  # the parent and both jobs
        assert process.poll() is None and time.monotonic() < deadline, "the sweep never got going"
        time.sleep(0.3)
    workers = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signum) if to_group else process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in output
    assert f"interrupted ({signal.Signals(signum).name})" in output
    assert psutil.wait_procs(workers, timeout=10)[1] == [], "a worker trains on after the sweep stopped"
    assert sorted(run_statuses(db)) == ["KILLED"] * 3
