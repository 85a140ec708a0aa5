"""Multiruns with every launcher, Optuna search, and a real remote tracking server."""

import http.server
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from src.infra import store_access
from src.sweep import job_key, one_row_per_job, summarize
from tests.conftest import CONF, copy_store, free_port, mlflow_service, rest, run_cli, run_statuses, train_here

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


def test_a_jobs_table_keeps_each_jobs_finished_run_else_its_latest():
    rows = [
        {"job": 1, "status": "KILLED", "start": 1},
        {"job": 0, "status": "KILLED", "start": 1},
        {"job": 0, "status": "FINISHED", "start": 2},
        {"job": 1, "status": "KILLED", "start": 3},
        {"job": 2, "status": "FINISHED", "start": 1},
    ]
    assert [(r["job"], r["status"], r["start"]) for r in one_row_per_job(rows)] == [
        (0, "FINISHED", 2),
        (1, "KILLED", 3),
        (2, "FINISHED", 1),
    ]


def test_a_jobs_key_changes_with_its_config_code_or_data():
    x, y = np.linspace(-1, 1, 5), np.ones(5)
    key = job_key({"lr": 0.001, "seed": 0}, "abc", x, y)
    assert key == job_key({"seed": 0, "lr": 0.001}, "abc", x.copy(), y.copy())
    assert key != job_key({"lr": 0.002, "seed": 0}, "abc", x, y)
    assert key != job_key({"lr": 0.001, "seed": 0}, "abd", x, y)
    assert key != job_key({"lr": 0.001, "seed": 0}, "abc", x, np.nextafter(y, 2))
    assert key != job_key({"lr": 0.001, "seed": 0}, "abc", x.astype(np.float32), y.astype(np.float32))


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
    assert all(len(client.get_metric_history(r.info.run_id, "train/loss")) == 800 for r in finished)
    lowest = min(r.data.metrics["final_loss"] for r in finished)
    assert parent.data.metrics["best_final_loss"] == lowest
    by_id = {r.info.run_id: r for r in children}
    assert by_id[parent.data.tags["best_run_id"]].data.metrics["final_loss"] == lowest  # ties: either backend
    assert parent.data.metrics["jobs"] == 6 and parent.data.metrics["jobs_finished"] == 4
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"sweep_summary.md", "final_loss_vs_lr.png"}
    # names that tell the jobs apart in the runs table: what varies first
    assert by_job[3].info.run_name == "lr=0.005 torch"  # what varies, and nothing else: its number is a tag
    assert len({r.info.run_name[:14] for r in children}) == 6  # told apart in the column, indented under the parent
    # the best job's model is registered, and the alias names it
    version = client.get_model_version_by_alias("autograd-fit", "best")
    assert version.run_id == parent.data.tags["best_run_id"]
    assert "sweep page: http://127.0.0.1:5000/#/experiments/" in done.stderr + done.stdout
    assert (done.stdout + done.stderr).count("to browse it") <= 1  # once per sweep, not once per job

    # What the parent's page shows, read as mlflow ui reads it: what was swept, and which job won
    store = tracking_env["MLFLOW_TRACKING_URI"]
    with mlflow_service("server", "--workers", "1", "--backend-store-uri", store, cwd=tmp_path) as url:
        shown = rest(url, f"/api/2.0/mlflow/runs/get?run_id={parent.info.run_id}")["run"]
    params = {p["key"]: p["value"] for p in shown["data"]["params"]}
    assert params == {"swept.lr": "0.001,0.005,0.1", "swept.backend": "numpy,torch", "launcher": "basic",
                      "sweeper": "basic"}  # fmt: skip
    metrics = {m["key"]: m["value"] for m in shown["data"]["metrics"]}
    assert metrics["best_objective"] == lowest and metrics["best_lr"] == 0.005
    tags = {t["key"]: t["value"] for t in shown["data"]["tags"]}
    assert tags["best_run_id"] in by_id and "backend" not in tags and "device" not in tags
    assert shown["info"]["run_name"] == "sweep lr,backend"


def test_a_sweep_whose_jobs_cannot_run_says_so_in_a_line_each_and_fails(tmp_path, tracking_env):
    done = run_cli("-m", "lr=0.001,0.002", "+sweep.resume=true", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 2 and all("config key 'sweep'" in line for line in errors), done.stderr
    assert "#0 lr=0.001" in errors[0] and "#1 lr=0.002" in errors[1]
    assert "sweep: 0/2 jobs finished, 2 failed" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    client, parent, children = _sweep(tracking_env["MLFLOW_TRACKING_URI"])
    assert parent.info.status == "FAILED"
    assert sorted(r.info.status for r in children) == ["FAILED", "FAILED"]
    assert all("config key 'sweep'" in r.data.tags["error"] for r in children)
    [sweep_folder] = (tmp_path / "multirun").glob("*/*")
    assert [p.name for p in sweep_folder.iterdir()] == ["multirun.yaml"]  # no job left a folder


@pytest.mark.parametrize("launcher", ["joblib", "local"])
def test_parallel_launchers_land_every_run_on_a_fresh_database(launcher, tmp_path, new_store_env):
    jobs = "seed=0,1,2,3" if launcher == "joblib" else "seed=0,1"
    extra = ["hydra.launcher.n_jobs=4"] if launcher == "joblib" else []
    done = run_cli("-m", f"hydra/launcher={launcher}", *extra, jobs, cwd=tmp_path, env=new_store_env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parent, children = _sweep(new_store_env["MLFLOW_TRACKING_URI"])
    assert len(children) == len(jobs.split(","))
    assert parent.info.status == "FINISHED"
    for run in children:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 800


def test_slurm_preset_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.timeout_min == 30 and launcher.array_parallelism == 64


def test_optuna_search_is_seeded_and_reproducible(tmp_path, tracking_env):
    best = []
    for attempt in range(2):  # in one store: the second search is a new one, not a resumed one
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
    client = MlflowClient(tracking_env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("autograd-fit").experiment_id])
    parents = [r.info.run_id for r in runs if r.data.tags.get("sweep") == "true"]
    jobs = [[r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent] for parent in parents]
    chosen = [[r.data.params["lr"] for r in sorted(children, key=_job)] for children in jobs]
    assert len(parents) == 2 and len(chosen[0]) == 5 and chosen[0] == chosen[1]


def _job(run) -> int:
    return int(run.data.tags["sweep_job"])


ENDED = ("FINISHED", "FAILED")  # a job that ran to its end: FAILED is a diverged job, which scores inf


def _stop_after(args: list[str], ended: int, signum: int, cwd, env) -> None:
    """Start `python -m src.train ARGS` in `cwd`; send its process group `signum` once `ended` runs have ended."""
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while sum(status in ENDED for status in run_statuses(cwd / "mlflow.db")) < ended:
        assert process.poll() is None, "the sweep ended before it could be stopped"
        assert time.monotonic() < deadline, "the sweep never got going"
        time.sleep(0.2)
    os.killpg(process.pid, signum)
    process.wait(timeout=120)


def _check_resumed(uri: str, before, jobs: int) -> list:
    """The sweep stopped as `before` (parent, children), then resumed: one parent, reused and FINISHED;
    each job ended exactly once; the runs that had ended before the stop kept; a summary of every job.
    Returns the runs that ended."""
    client, parent, children = _sweep(uri)
    assert parent.info.run_id == before[0].info.run_id and parent.info.status == "FINISHED"
    ended = [r for r in children if r.info.status in ENDED]
    assert sorted(map(_job, ended)) == list(range(jobs)), "a job ran twice, or not at all"
    kept = {r.info.run_id for r in before[1] if r.info.status in ENDED}
    assert kept <= {r.info.run_id for r in ended}
    finished = sum(r.info.status == "FINISHED" for r in ended)
    assert parent.data.metrics["jobs"] == jobs and parent.data.metrics["jobs_finished"] == finished
    table = client.download_artifacts(parent.info.run_id, "sweep_summary.md")
    rows = [line for line in Path(table).read_text().splitlines()[2:] if line.startswith("| ")]
    assert [int(row.split("|")[1]) for row in rows] == list(range(jobs))
    assert sum("| FINISHED |" in row for row in rows) == finished
    return ended


def test_a_killed_sweep_resumes_and_runs_only_the_jobs_it_did_not_finish(tmp_path, tracking_env):
    command = ["-m", "seed=0,1,2,3,4,5"]
    _stop_after(command, 2, signal.SIGKILL, tmp_path, tracking_env)  # nothing is closed: parent left RUNNING
    uri = tracking_env["MLFLOW_TRACKING_URI"]
    before = _sweep(uri)[1:]
    finished_before = sum(r.info.status == "FINISHED" for r in before[1])
    assert 2 <= finished_before < 6
    done = run_cli(*command, cwd=tmp_path, env=tracking_env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ended = _check_resumed(uri, before, jobs=6)
    assert all(r.info.status == "FINISHED" for r in ended)
    assert f"which ended KILLED with {finished_before} job(s) finished" in done.stdout
    assert done.stdout.count(": done before the sweep stopped, in run") == finished_before
    assert done.stdout.count("Launching 1 jobs locally") == 0 and "Launching 6 jobs locally" in done.stdout


def test_resume_false_as_the_docs_write_it_starts_a_new_sweep(tmp_path, tracking_env):
    command = ["-m", "seed=0,1"]
    _stop_after(command, 1, signal.SIGKILL, tmp_path, tracking_env)
    done = run_cli(*command, "hydra.callbacks.mlflow_sweep.resume=false", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "which ended KILLED with" not in done.stdout  # what a resumed sweep says first
    client = MlflowClient(tracking_env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("autograd-fit").experiment_id])
    stopped, new = sorted((r for r in runs if r.data.tags.get("sweep") == "true"), key=lambda r: r.info.start_time)
    assert stopped.info.status == "KILLED" and new.info.status == "FINISHED"  # the stopped one, ended as stale
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == new.info.run_id]
    assert sorted(_job(r) for r in children) == [0, 1] and all(r.info.status == "FINISHED" for r in children)


def test_a_stopped_optuna_search_resumes_its_study_up_to_n_trials(tmp_path, tracking_env):
    import optuna

    command = ["search=optuna_lr", "hydra.sweeper.n_trials=4"]
    _stop_after(command, 2, signal.SIGINT, tmp_path, tracking_env)  # Ctrl-C: the parent ends KILLED
    uri = tracking_env["MLFLOW_TRACKING_URI"]
    before = _sweep(uri)[1:]
    assert before[0].info.status == "KILLED"
    done = run_cli(*command, cwd=tmp_path, env=tracking_env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Using an existing study" in done.stdout and "resuming Optuna study" in done.stdout
    ended = _check_resumed(uri, before, jobs=4)
    assert len({r.data.params["lr"] for r in ended}) == 4, "the resumed search chose an lr it had tried"
    study = optuna.load_study(
        study_name=f"lr_search-{before[0].info.run_id}", storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4  # the trial the stop cut short is FAIL, and was tried again
    objectives = [r.data.metrics["test_mse"] if r.info.status == "FINISHED" else math.inf for r in ended]
    assert sorted(t.value for t in complete) == sorted(objectives)


def test_runs_log_over_http_to_a_real_tracking_server(tmp_path, monkeypatch):
    server = tmp_path / "server"
    server.mkdir()
    store = f"sqlite:///{server / 'server.db'}"
    with mlflow_service("server", "--backend-store-uri", store, "--workers", "1", cwd=server) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        train_here("steps=50", output_dir=tmp_path / "out")
        experiment = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=autograd-fit")["experiment"]
        [run] = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert run["info"]["status"] == "FINISHED"
        run_id = run["info"]["run_id"]
        query = f"run_id={run_id}&metric_key=train/loss&max_results=1000"
        history = rest(url, f"/api/2.0/mlflow/metrics/get-history?{query}")
        assert len(history["metrics"]) == 50
        files = rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")["files"]
        assert {f["path"] for f in files} == {"loss.png", "fit.png", "config.yaml", "history.csv"}


@pytest.mark.serial  # timed
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


@contextmanager
def _sick_server(api: str) -> Iterator[str]:
    """A server on 127.0.0.1 whose /health answers 200 and whose API `api`: "hangs" or answers "500"."""

    class Sick(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
                return
            if api == "hangs":
                time.sleep(60)
                return
            body = json.dumps({"error_code": "INTERNAL_ERROR", "message": "boom: something inside broke"})
            self.send_response(500)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Sick)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.mark.serial  # timed
@pytest.mark.parametrize("sickness", ["hangs", "500", "a real mlflow server on a locked database"])
def test_a_server_that_answers_health_but_not_its_api_fails_fast_and_logs_nothing(sickness, tmp_path, migrated_store):
    with ExitStack() as stack:
        if sickness.startswith("a real"):
            db = tmp_path / "server.db"
            copy_store(migrated_store, db)
            url = stack.enter_context(mlflow_service("server", "--backend-store-uri", f"sqlite:///{db}",
                                                     "--workers", "1", cwd=tmp_path))  # fmt: skip
            holder = stack.enter_context(closing(sqlite3.connect(db, isolation_level=None)))
            holder.execute("BEGIN EXCLUSIVE")  # a stuck process holds the server's database
        else:
            url = stack.enter_context(_sick_server(sickness))
        started = time.monotonic()
        done = run_cli(cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": url})
        elapsed = time.monotonic() - started
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    said = {
        "hangs": f"its API did not answer within {store_access.SERVER_ANSWER_SECONDS} s",
        "500": "its API answered HTTP 500 (boom: something inside broke)",
    }.get(sickness, "its API answered HTTP 500 (Internal Server Error)")  # an HTML page: the lock is in its log
    assert line.startswith(f"error: the MLflow tracking server at {url} answers /health, but {said}"), line
    assert elapsed < 30  # seconds, process start-up included; MLflow's own retries take minutes
    assert not list(tmp_path.rglob("*.png")), "outputs were written for a run that was never recorded"


def _process_group_listening_on(url: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    [pid] = {c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == psutil.CONN_LISTEN}
    return os.getpgid(pid)


@pytest.mark.serial  # timed
@pytest.mark.parametrize(
    "sickness,work",
    [
        ("stopped with SIGSTOP", ["steps=200000"]),  # stops while the run trains or writes its long histories
        ("its database locked", ["steps=10000000", "log_every=100000"]),  # while the run trains, for ~45 s
    ],
)
def test_a_server_that_turns_sick_mid_run_ends_it_in_one_line_within_30_s(sickness, work, tmp_path, migrated_store):
    """A server that stops answering once the run is under way: not MLflow's minutes of retries, but
    one line naming the server and the symptom (lifecycle.watch_server); the next run closes the run."""
    db = tmp_path / "server.db"
    copy_store(migrated_store, db)
    with ExitStack() as stack:
        url = stack.enter_context(mlflow_service("server", "--backend-store-uri", f"sqlite:///{db}",
                                                 "--workers", "1", cwd=tmp_path))  # fmt: skip
        env = {**os.environ, "MLFLOW_TRACKING_URI": url}
        run = subprocess.Popen([sys.executable, "-m", "src.train", *work], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while run_statuses(db) != ["RUNNING"]:
            assert run.poll() is None and time.monotonic() < deadline, "the run never got going"
            time.sleep(0.1)
        if sickness.startswith("stopped"):
            server = _process_group_listening_on(url)
            os.killpg(server, signal.SIGSTOP)
            stack.callback(os.killpg, server, signal.SIGCONT)
        else:
            holder = stack.enter_context(closing(sqlite3.connect(db, isolation_level=None)))
            holder.execute("BEGIN EXCLUSIVE")
            stack.callback(holder.execute, "ROLLBACK")
        started = time.monotonic()
        _, stderr = run.communicate(timeout=120)
        elapsed = time.monotonic() - started
        stack.close()  # the server recovers
        assert run.returncode == 1, stderr
        [line] = stderr.splitlines()
        assert line.startswith(f"error: the MLflow tracking server at {url} stopped answering mid-run: its API "), line
        assert line.endswith("if it stays RUNNING there, the next run in its experiment ends it KILLED"), line
        assert elapsed < 30, f"{elapsed:.1f} s"
    # The request that ended the run FAILED may have timed out here yet been carried out once the server
    # recovered; if it was not, the next run ends the run KILLED. It is never left RUNNING, nor FINISHED.
    with mlflow_service("server", "--backend-store-uri", f"sqlite:///{db}", "--workers", "1", cwd=tmp_path) as url:
        done = run_cli("steps=5", cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": url})
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(run_statuses(db)) in (["FAILED", "FINISHED"], ["FINISHED", "KILLED"])


def _long_parallel_sweep(launcher: str, cwd: Path, env: dict, **output) -> tuple[subprocess.Popen, Path, list]:
    """A 2-job sweep of long jobs on `launcher`, in a session of its own; returned once the parent and
    both jobs are RUNNING, with its store and its worker processes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", "-m", f"hydra/launcher={launcher}", "lr=0.001,0.002", "steps=3000000"],
        cwd=cwd, env=env, start_new_session=True, **output,
    )  # fmt: skip
    db, deadline = cwd / "mlflow.db", time.monotonic() + 120
    while run_statuses(db).count("RUNNING") < 3:  # the parent and both jobs
        assert process.poll() is None and time.monotonic() < deadline, "the sweep never got going"
        time.sleep(0.3)
    return process, db, psutil.Process(process.pid).children(recursive=True)


@pytest.mark.parametrize("launcher", ["joblib", "local"])
def test_workers_end_their_runs_when_the_sweep_is_killed_outright(launcher, tmp_path, tracking_env):
    """SIGKILL leaves the sweep's process no time to stop its workers: each job watches it
    (src.sweep.watch_the_sweep), ends its run KILLED within a second, and its worker exits."""
    process, db, workers = _long_parallel_sweep(
        launcher, tmp_path, tracking_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    process.kill()
    process.wait()
    assert psutil.wait_procs(workers, timeout=15)[1] == [], "a worker trains on after its sweep was killed"
    # the two jobs ended KILLED by their workers; the parent, whose process was killed, is left for the
    # next run to close (close_stale_runs)
    assert sorted(run_statuses(db)) == ["KILLED", "KILLED", "RUNNING"]


@pytest.mark.parametrize(
    "launcher,signum,to_group",
    [
        ("joblib", signal.SIGTERM, False),
        ("joblib", signal.SIGINT, True),
        ("local", signal.SIGTERM, False),
        ("local", signal.SIGINT, True),
    ],
    ids=["joblib-SIGTERM-to-main", "joblib-Ctrl-C-to-group", "local-SIGTERM-to-main", "local-Ctrl-C-to-group"],
)
def test_an_interrupted_parallel_sweep_stops_its_workers_and_ends_every_run_killed(
    launcher, signum, to_group, tmp_path, tracking_env
):
    process, db, workers = _long_parallel_sweep(
        launcher, tmp_path, tracking_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    os.killpg(process.pid, signum) if to_group else process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in output
    assert f"interrupted ({signal.Signals(signum).name})" in output
    assert psutil.wait_procs(workers, timeout=10)[1] == [], "a worker trains on after the sweep stopped"
    assert sorted(run_statuses(db)) == ["KILLED"] * 3
