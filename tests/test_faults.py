"""Faults, as a user meets them: interrupts, broken tracking stores, divergence in the pipeline,
and many runs at once. Each ends loudly and cleanly: one line, nothing lost, nothing RUNNING."""

import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import numpy as np
import psutil
import pytest
from mlflow.tracking import MlflowClient

from src import errors
from src.infra import lifecycle, store_access
from tests.conftest import BIN, ROOT, copy_store, run_cli, run_statuses, train_here

pytestmark = pytest.mark.slow
LONG_RUN = ["data.n=200000", "steps=1000000", "lr=1e-6"]  # minutes of stable training (the bound is ≈ 9e-6)


def _env():
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def _runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("autograd-fit")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_ends_killed_and_leaves_no_partial_output(signum, tmp_path, tracking_env):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", *LONG_RUN, f"hydra.run.dir={out}"],
        cwd=tmp_path, env=tracking_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    uri = tracking_env["MLFLOW_TRACKING_URI"]
    deadline = time.monotonic() + 120
    while "RUNNING" not in run_statuses(tmp_path / "mlflow.db"):
        assert process.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.3)
    time.sleep(0.5)  # well inside the training loop now
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130
    assert "Traceback" not in stderr
    _, [run] = _runs(uri)
    assert run.info.status == "KILLED"
    left = sorted(p.name for p in out.iterdir())
    assert left == [".hydra", "train.log"], f"outputs of an unfinished run were left: {left}"

    again = run_cli("steps=20", f"hydra.run.dir={out}", cwd=tmp_path, env=tracking_env)
    assert again.returncode == 0, again.stderr
    _, runs = _runs(uri)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]


def test_a_store_in_a_folder_that_cannot_be_made_is_named(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    done = run_cli(cwd=tmp_path, env={**_env(), "MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"error: cannot create or open the MLflow store {uri}" in done.stderr
    assert "MLFLOW_TRACKING_URI" in done.stderr


def test_a_corrupt_database_is_named_and_kept(tmp_path):
    db = tmp_path / "mlflow.db"
    garbage = b"this is not an sqlite database\x00" * 64
    db.write_bytes(garbage)
    done = run_cli(cwd=tmp_path, env={**_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "is not a usable MLflow database" in done.stderr and "move it aside" in done.stderr
    assert db.read_bytes() == garbage, "the broken store was modified"


@pytest.mark.serial  # timed
def test_a_locked_database_is_named_and_nothing_is_left_running(tmp_path, tracking_env):
    uri = tracking_env["MLFLOW_TRACKING_URI"]
    train_here("steps=5", output_dir=tmp_path / "first")
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        began = time.monotonic()
        done = run_cli("steps=5", cwd=tmp_path, env=tracking_env, timeout=300)
        took = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: the MLflow store {uri} is locked by another")
    assert len(done.stderr.strip().splitlines()) == 1
    assert took < 10, f"the lock was named only after {took:.1f} s"
    _, runs = _runs(uri)
    assert [r.info.status for r in runs] == ["FINISHED"], "a run was recorded while the store was locked"


def test_sixteen_concurrent_runs_on_a_fresh_database_all_land(tmp_path, new_store_env):
    jobs = 16
    with ThreadPoolExecutor(jobs) as pool:
        done = list(pool.map(lambda s: run_cli(f"seed={s}", cwd=tmp_path, env=new_store_env, timeout=600), range(jobs)))
    assert [d.returncode for d in done] == [0] * jobs, [d.stderr[-1500:] for d in done if d.returncode]
    client, runs = _runs(new_store_env["MLFLOW_TRACKING_URI"])
    assert sorted(int(r.data.params["seed"]) for r in runs) == list(range(jobs))
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 800
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"loss.png", "fit.png"}


# Imports once, then for each line "URI DELAY SIGNAL" it reads creates that store in a forked child,
# sends the child SIGNAL after DELAY seconds (none if DELAY < 0), and prints how the child ended.
# Each interruption below so costs one creation, not MLflow's import as well.
CREATE_STORES = """
import os, signal, sys, time, traceback
from src.infra import lifecycle, store_access
from src import errors
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # what creating a store imports
print("ready", flush=True)
for line in sys.stdin:
    uri, delay, signum = line.split()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            store_access.open_experiment(uri, "autograd-fit")
            status = 0
        except BaseException:  # SIGINT's KeyboardInterrupt, which unwound the creation
            traceback.print_exc()
        finally:
            os._exit(status)
    if float(delay) >= 0:
        time.sleep(float(delay))
        os.kill(pid, int(signum))  # not reaped yet: at worst it has just ended
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def test_store_creation_interrupted_at_twenty_points_never_leaves_a_broken_store(tmp_path):
    creator = subprocess.Popen([sys.executable, "-c", CREATE_STORES], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip

    def create(db: Path, delay: float = -1, signum: int = 0) -> int:
        creator.stdin.write(f"sqlite:///{db} {delay} {signum}\n")
        creator.stdin.flush()
        return int(creator.stdout.readline())

    try:
        assert creator.stdout.readline().strip() == "ready"
        began = time.monotonic()
        assert create(tmp_path / "whole" / "mlflow.db") == 0
        creation = time.monotonic() - began

        for point, delay in enumerate(np.linspace(0.0, creation, 20)):
            db = tmp_path / f"point{point}" / "mlflow.db"
            create(db, delay, signal.SIGKILL if point % 2 else signal.SIGINT)  # no unwinding / unwinding
            if db.exists():  # a kill inside a write leaves a hot journal, which opening a store rolls back first
                store_access._check_writable(db)
            assert not db.exists() or store_access._schema_and_runs(db)[0] is not None, (
                f"half-made store at {delay:.2f} s"
            )
            # the next run opens (or creates) it, and can record into it
            client, experiment_id = store_access.open_experiment(f"sqlite:///{db}", "autograd-fit")
            run = client.create_run(experiment_id)
            client.set_terminated(run.info.run_id)
            assert not list(db.parent.glob(".mlflow.db.building*")), "a temporary store was left behind"
    finally:
        creator.stdin.close()
        assert creator.wait(timeout=60) == 0


@pytest.mark.serial
def test_a_store_creation_held_by_a_stopped_process_is_named_at_once(tmp_path, new_store_env):
    first = subprocess.Popen([sys.executable, "-m", "src.train", "steps=5"], cwd=tmp_path, env=new_store_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    building, deadline = tmp_path / ".mlflow.db.building", time.monotonic() + 60
    while not building.exists():  # it holds the creation lock, and is migrating the new store
        assert first.poll() is None and time.monotonic() < deadline, "the first run never began to create its store"
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)  # Ctrl-Z
    try:
        began = time.monotonic()
        done = run_cli("steps=5", cwd=tmp_path, env=new_store_env, timeout=60)
        took = time.monotonic() - began
    finally:
        first.send_signal(signal.SIGCONT)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: process {first.pid} is creating the MLflow store {tmp_path / 'mlflow.db'} and is stopped (Ctrl-Z?); "
        f"resume it (fg, or kill -CONT {first.pid}) or end it, then run again"
    ]
    assert took < 10  # seconds, its own start-up included: not a wait on the lock
    assert first.wait(timeout=120) == 0  # resumed, the first run completes the store and its run
    assert run_statuses(tmp_path / "mlflow.db") == ["FINISHED"]


def _older_schema_store(db: Path, migrated_store: Path) -> None:
    """A real MLflow store of the schema before this MLflow's, made by MLflow's own migration downgrade."""
    import alembic.command
    import sqlalchemy
    from mlflow.store.db.utils import _get_alembic_config

    copy_store(migrated_store, db)
    config = _get_alembic_config(f"sqlite:///{db}")
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        alembic.command.downgrade(config, "-1")
    engine.dispose()


def test_only_an_empty_file_becomes_a_store_and_no_other_file_is_touched(tmp_path, migrated_store):
    empty = tmp_path / "empty" / "mlflow.db"  # `touch mlflow.db`: nothing in it to lose
    empty.parent.mkdir()
    empty.touch()
    client, experiment_id = store_access.open_experiment(f"sqlite:///{empty}", "autograd-fit")
    assert client.get_experiment(experiment_id).name == "autograd-fit"

    def refused(db: Path, why: str, lock: bool = False) -> None:
        """Refused in one line naming `db`; nothing moved, changed or made beside it, but for an MLflow
        store the lock file (`lock`) that every run of it takes."""
        folder, before = db.parent, db.read_bytes() if db.is_file() else None
        listing = sorted([*folder.iterdir(), *([db.with_name(db.name + ".lock")] if lock else [])])
        with pytest.raises(errors.TrackingError, match=why) as refusal:
            store_access.open_experiment(f"sqlite:///{db}", "autograd-fit")
        assert str(db) in str(refusal.value) and "\n" not in str(refusal.value)
        assert sorted(folder.iterdir()) == listing, "a file was moved, or one was left beside it"
        assert before is None or db.read_bytes() == before

    (tmp_path / "optuna").mkdir()  # another program's database, with its data
    study = tmp_path / "optuna" / "study.db"
    with closing(sqlite3.connect(study)) as con, con:
        con.execute("CREATE TABLE studies (study_id INTEGER, study_name TEXT)")
        con.execute("INSERT INTO studies VALUES (1, 'lr_search')")
    refused(study, r"is an SQLite database but not an MLflow store \(its tables: studies\); it is left as it is")

    (tmp_path / "half").mkdir()  # MLflow's tables, but no schema version: not a store MLflow can open
    half = tmp_path / "half" / "mlflow.db"
    with closing(sqlite3.connect(half)) as con, con:
        con.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT)")
        con.execute("CREATE TABLE runs (run_uuid TEXT)")
    refused(half, r"not an MLflow store \(its tables: experiments, runs\)")

    (tmp_path / "older").mkdir()
    older = tmp_path / "older" / "mlflow.db"
    _older_schema_store(older, migrated_store)
    refused(older, r"has MLflow schema \w+ and 0 runs, but MLflow .* needs schema \w+: back it up, then run `mlflow db",
            lock=True)  # fmt: skip

    (tmp_path / "device").mkdir()  # what sqlite:////dev/null points at
    device = tmp_path / "device" / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root")
    refused(device, "is a character device, not a database file")
    assert stat.S_ISCHR(device.stat().st_mode)


@contextmanager
def small_disk(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount`; needs root (the test skips without it). Unmounted after."""
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    """256 KiB: too small for an MLflow store."""
    with small_disk(tmp_path / "full", "256k") as mount:
        yield mount


def test_a_full_disk_during_store_creation_is_named_and_leaves_nothing(full_disk, tmp_path):
    uri = f"sqlite:///{full_disk / 'mlflow.db'}"
    done = run_cli("steps=5", cwd=tmp_path, env={**_env(), "MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: no space left for the MLflow store {uri}")
    assert sorted(p.name for p in full_disk.iterdir()) == ["mlflow.db.lock"]


def test_a_run_killed_without_unwinding_is_ended_by_the_next_run_and_a_live_one_is_not(tmp_path, tracking_env):
    uri = tracking_env["MLFLOW_TRACKING_URI"]
    out = tmp_path / "killed"
    victim, alive = (
        subprocess.Popen([sys.executable, "-m", "src.train", *LONG_RUN, f"hydra.run.dir={folder}"],
                         cwd=tmp_path, env=tracking_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for folder in (out, tmp_path / "alive")
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while run_statuses(tmp_path / "mlflow.db").count("RUNNING") < 2:
            assert victim.poll() is None and time.monotonic() < deadline, "the runs never started"
            time.sleep(0.3)
        victim.kill()  # SIGKILL: nothing unwinds, the run stays RUNNING
        victim.wait()
        (out / ".history.csv.partial-x1y2.csv").write_text("step,loss\n0,1")  # what a writer killed mid-write leaves
        client, _ = _runs(uri)
        experiment_id = client.get_experiment_by_name("autograd-fit").experiment_id
        now, silent = time.time(), lifecycle.SILENT_AFTER_SECONDS
        remote = {"owner.host": "node-17", "owner.pid": "1"}
        elsewhere, beating, silent_run = (
            client.create_run(experiment_id, tags={**remote, **tags})
            for tags in (
                {"owner.started": f"{now - 60}"},  # started a minute ago
                {"owner.started": f"{now - 2 * silent}", lifecycle.HEARTBEAT_TAG: f"{now - 60}"},
                {"owner.started": f"{now - 2 * silent}", lifecycle.HEARTBEAT_TAG: f"{now - silent - 60}"},
            )
        )

        again = run_cli("steps=5", cwd=tmp_path, env=tracking_env)
        assert again.returncode == 0, again.stderr
        assert "ended 2 MLflow run(s) left RUNNING by a process that is gone" in again.stderr + again.stdout
        _, runs = _runs(uri)
        by_dir = {r.data.tags.get("output_dir"): r for r in runs}
        killed = by_dir[str(out)]
        assert killed.info.status == "KILLED"
        assert killed.data.tags["error"].startswith(f"left RUNNING: its process {victim.pid} on ")
        assert not list(out.glob(".*partial*")), "the killed run's temporary file was left"
        assert by_dir[str(tmp_path / "alive")].info.status == "RUNNING"  # its owner is alive
        for remote_run in (elsewhere, beating):  # another host's, with a recent sign of life
            assert client.get_run(remote_run.info.run_id).info.status == "RUNNING"
        gone = client.get_run(silent_run.info.run_id)
        assert gone.info.status == "KILLED"
        minutes = round((silent + 60) / 60)
        assert gone.data.tags["error"].startswith(f"left RUNNING: no heartbeat from its process 1 on node-17 for "
                                                  f"{minutes} min")  # fmt: skip
    finally:
        for process in (victim, alive):
            process.kill()
            process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_stage_ends_when_dvc_is_killed(signum, repo):
    params = (repo / "params.yaml").read_text()
    long_run = params.replace("lr: 0.001", "lr: 1.0e-06").replace("steps: 800", "steps: 1000000")
    (repo / "params.yaml").write_text(long_run.replace("'n': 100", "'n': 200000"))
    console = (repo.parent / "console.txt").open("w")  # the stage's console too, for a failure's message
    dvc_process = subprocess.Popen(
        [str(BIN / "dvc"), "repro"], cwd=repo,
        env={**_env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SHELL": "/bin/sh"},  # dash: no implicit exec
        stdout=console, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while "RUNNING" not in run_statuses(repo / "mlflow.db"):
        assert dvc_process.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.3)
    [stage] = psutil.Process(dvc_process.pid).children()
    dvc_process.send_signal(signum)  # DVC dies, and does not stop its stage itself
    dvc_process.wait()
    assert psutil.wait_procs([stage], timeout=30)[1] == [], "the train stage trained on without DVC"
    console.close()
    _, [run] = _runs(f"sqlite:///{repo / 'mlflow.db'}")
    assert run.info.status == "KILLED", (repo.parent / "console.txt").read_text()[-3000:]
    assert not (repo / "models" / "fit.json").exists()


def test_dvc_repro_started_with_ctrl_c_ignored_still_stops_on_a_ctrl_c_to_its_group(repo):
    """A script's `dvc repro &` inherits SIGINT ignored, as do its stages; a Ctrl-C sent to the whole
    group (kill -INT -PGID) must still stop the training, not let the pipeline run to its end."""
    params = (repo / "params.yaml").read_text()
    long_run = params.replace("lr: 0.001", "lr: 1.0e-06").replace("steps: 800", "steps: 1000000")
    (repo / "params.yaml").write_text(long_run.replace("'n': 100", "'n': 200000"))
    dvc_process = subprocess.Popen(
        [str(BIN / "dvc"), "repro"], cwd=repo, env={**_env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # what `cmd &` in a script does
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "RUNNING" not in run_statuses(repo / "mlflow.db"):
            assert dvc_process.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.3)
        os.killpg(dvc_process.pid, signal.SIGINT)
        console, _ = dvc_process.communicate(timeout=60)
    finally:
        with suppress(ProcessLookupError):  # what is left of the group, if the Ctrl-C was lost
            os.killpg(dvc_process.pid, signal.SIGKILL)
    assert dvc_process.returncode != 0, console[-3000:]
    assert "interrupted (SIGINT)" in console
    _, [run] = _runs(f"sqlite:///{repo / 'mlflow.db'}")
    assert run.info.status == "KILLED"
    assert not (repo / "models" / "fit.json").exists() and not (repo / "metrics.json").exists()


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler of its own for `signum` (the SigCgt mask of /proc/PID/status)."""
    caught = re.search(r"^SigCgt:\s*([0-9a-f]+)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return bool(int(caught.group(1), 16) >> (signum - 1) & 1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_is_one_line(signum, tmp_path, new_store_env):
    process = subprocess.Popen([sys.executable, "-m", "src.train"], cwd=tmp_path, env=new_store_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    while not _catches(process.pid, signal.SIGTERM):  # src.infra.startup's handlers are in place (SIGTERM's last) ...
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    process.send_signal(signum)  # ... and the second of importing numpy, Hydra and MLflow has begun
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip() == f"interrupted ({signal.Signals(signum).name}) while starting; nothing was run"
    assert not (tmp_path / "mlflow.db").exists()


def test_warnings_and_errors_go_to_stderr_and_results_to_stdout(tmp_path, new_store_env):
    done = run_cli("lr=0.02", "steps=1", cwd=tmp_path, env=new_store_env)  # above the bound: one step cannot rise
    assert done.returncode == 0, done.stderr
    assert "at or above the stability bound" in done.stderr and "stability bound" not in done.stdout
    assert "final loss" in done.stdout and "final loss" not in done.stderr
    assert "Creating initial MLflow database tables" not in done.stderr + done.stdout


def test_a_full_disk_for_the_runs_files_ends_the_run_in_one_line(tmp_path, tracking_env):
    with small_disk(tmp_path / "small", "2m") as out:  # room to start, not for 100,000 steps of history
        done = run_cli("steps=100000", f"hydra.run.dir={out}", cwd=tmp_path, env=tracking_env)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
        assert line.startswith(f"error: cannot write {out / 'history.csv'}") and "No space left on device" in line
        assert not list(out.glob(".*partial*")), "a partial file was left"
    _, [run] = _runs(tracking_env["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("multirun", [False, True])
def test_a_run_folder_on_a_full_disk_is_refused_before_any_work(multirun, tmp_path, tracking_env):
    with small_disk(tmp_path / "small", "48k") as disk:  # too little for Hydra's own files and the log
        key, args = ("hydra.sweep.dir", ["-m", "seed=0,1"]) if multirun else ("hydra.run.dir", [])
        done = run_cli(*args, "steps=5", f"{key}={disk / 'out'}", cwd=tmp_path, env=tracking_env)
        left = list(disk.iterdir())
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: {key}={disk / 'out'}: {disk} has 48 KiB free, and a run's files need about 1 MiB; free some "
        f"space there, or choose another {key}"
    ]
    assert left == [] and run_statuses(tmp_path / "mlflow.db") == []


def test_a_read_only_store_is_named_in_one_line(tmp_path):
    with small_disk(tmp_path / "ro", "8m") as folder:
        env = {**_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
        assert run_cli("steps=5", cwd=tmp_path, env=env).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        done = run_cli("steps=5", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: the MLflow store sqlite:///{folder / 'mlflow.db'} is read-only (attempt to write a readonly "
        "database); make the file and its folder writable, or point MLFLOW_TRACKING_URI at a writable store"
    ]


@pytest.mark.serial  # timed
def test_a_directory_in_place_of_the_store_is_named_at_once(tmp_path):
    (tmp_path / "mlflow.db").mkdir()
    began = time.monotonic()
    env = {**_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = run_cli("steps=5", cwd=tmp_path, env=env)
    assert time.monotonic() - began < 10
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: the MLflow store") and "is a directory" in done.stderr


def test_a_lock_held_while_a_run_logs_fails_it_cleanly_once_released(tmp_path, tracking_env):
    train_here("steps=5", output_dir=tmp_path / "first")
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", "steps=200000", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path, env=tracking_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while run_statuses(tmp_path / "mlflow.db").count("RUNNING") == 0:
        assert process.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # held across the end of training and the logging:
    time.sleep(30)  # the rest of training (about 2 s), then past MLflow's 20 s wait for a locked store
    holder.execute("ROLLBACK")
    holder.close()
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 1
    assert stderr.strip().splitlines() == [
        f"error: the MLflow store {tracking_env['MLFLOW_TRACKING_URI']} is locked by another process ((sqlite3."
        "OperationalError) database is locked); close whatever holds it (an open sqlite3 shell, a stuck process) "
        "and run again"
    ]
    assert sorted(run_statuses(tmp_path / "mlflow.db")) == ["FAILED", "FINISHED"]


@pytest.mark.parametrize("entry_point", [True, False])
def test_the_collector_is_off_only_while_an_entry_point_imports(entry_point):
    """An entry point's first step (startup.begin) turns the cycle collector off for its imports, and
    `clean_exit` turns it back on; importing the package alone (as the hand-written floor does) leaves
    Python's default all along."""
    begin = "from src.infra import startup; startup.begin()\n" if entry_point else ""
    probe = (
        f"import gc\n{begin}import src.errors, src.train\noff = not gc.isenabled()\n"
        "with src.errors.clean_exit():\n    print(off, gc.isenabled(), gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(entry_point), "True", str(entry_point)]  # frozen only if it was off


def test_every_entry_point_begins_with_startup_before_its_imports():
    """Each `python -m src.<module>` entry point's first statement, before any import, is startup.begin()."""
    import ast

    entry_points = [p for p in (ROOT / "src").rglob("*.py") if '\nif __name__ == "__main__":' in p.read_text()]
    assert len(entry_points) >= 7
    for path in entry_points:
        body = ast.parse(path.read_text()).body
        first = body[1] if isinstance(body[0], ast.Expr) else body[0]  # after the docstring
        assert isinstance(first, ast.If) and "startup.begin()" in ast.unparse(first), path


LOST_INTERRUPT = """
import gc, os, signal, sys, time
import mlflow
from src import errors
from src.infra import lifecycle, store_access

class Finalized:  # a finalizer, like SQLAlchemy's weakref callbacks, that the collector runs
    def __del__(self):
        os.kill(os.getpid(), int(sys.argv[2]))  # handled in here: Python prints the interrupt and drops it

with errors.clean_exit():
    mlflow.set_tracking_uri(sys.argv[1])
    with lifecycle.tracked_run(mlflow.create_experiment("lost"), "lost", {}):
        cycle = Finalized()
        cycle.itself = cycle
        del cycle
        gc.collect()
        print(f"dropped at {time.monotonic()}", flush=True)
        for _ in range(600):  # a minute of training
            time.sleep(0.1)
        print("trained on for a minute after the interrupt was dropped")
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_dropped_inside_a_finalizer_is_acted_on_within_seconds(signum, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-c", LOST_INTERRUPT, uri, str(int(signum))], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    ended = time.monotonic()
    name = signum.name
    assert "Exception ignored in" in done.stderr and f"KeyboardInterrupt: {name}" in done.stderr  # it was dropped
    assert "trained on for a minute" not in done.stdout
    dropped = float(done.stdout.split("dropped at ")[1].split()[0])
    assert ended - dropped < 10, "the interrupt was acted on only after the work was done"  # not 60 s
    assert done.returncode == 130, done.stderr[-3000:]
    assert f"interrupted ({name})" in done.stderr
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("lost").experiment_id])
    assert run.info.status == "KILLED"


@pytest.mark.parametrize("storage", ["a text file", "a directory", "a read-only database", "a read-only folder"])
def test_an_optuna_storage_that_cannot_keep_the_study_is_one_line_and_leaves_nothing(storage, tmp_path, tracking_env):
    with small_disk(tmp_path / "disk", "8m") as disk:
        target = {"a text file": disk / "notes.txt", "a directory": disk}.get(storage, disk / "optuna.db")
        if storage == "a text file":
            target.write_text("not a database\n")
        if storage == "a read-only database":
            with closing(sqlite3.connect(target)) as con:
                con.execute("CREATE TABLE studies (study_id INTEGER)")
        if storage.startswith("a read-only"):
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        done = run_cli("search=optuna_lr", f"hydra.sweeper.storage=sqlite:///{target}", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 1
    says = {"a text file": "is not an SQLite database", "a directory": "is a directory"}.get(storage)
    says = says or "cannot be written"
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: hydra.sweeper.storage=sqlite:///{target}: {target} {says}"), line
    assert line.endswith("point hydra.sweeper.storage at another file (sqlite:////absolute/path/optuna.db), or "
                         "leave it null")  # fmt: skip
    assert run_statuses(tmp_path / "mlflow.db") == [] and not (tmp_path / "multirun").exists()


def test_a_running_run_beats_until_it_ends(tmp_path, tracking_env, monkeypatch):
    monkeypatch.setattr(lifecycle, "HEARTBEAT_SECONDS", 0.2)
    client = MlflowClient(tracking_env["MLFLOW_TRACKING_URI"])
    with lifecycle.tracked_run(client.create_experiment("beats"), "beats", {}) as run_id:
        began = time.time()
        time.sleep(1.5)
        beat = float(client.get_run(run_id).data.tags[lifecycle.HEARTBEAT_TAG])
    assert began - 1 <= beat <= time.time()  # whole seconds
    last = client.get_run(run_id).data.tags[lifecycle.HEARTBEAT_TAG]
    time.sleep(1.5)
    assert client.get_run(run_id).data.tags[lifecycle.HEARTBEAT_TAG] == last, "it beat on after the run ended"
