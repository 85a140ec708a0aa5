"""Every run and every sweep writes into a folder of its own, and logs only what it made itself."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from src.run_folders import claim
from tests.conftest import run_cli, runs

RUNS = 8


def test_a_taken_folder_is_never_given_twice(tmp_path):
    wanted = tmp_path / "outputs" / "10-00-00"
    got = [claim(wanted) for _ in range(3)]
    assert [p.name for p in got] == ["10-00-00", "10-00-00-2", "10-00-00-3"]
    assert all(p.is_dir() for p in got)


def _same_name_for_every_run(repo):
    """The project's conf/, with run and sweep folders named by a constant instead of the clock: every
    run started now asks for the same folder, as runs started in the same second do."""
    config = repo / "conf" / "config.yaml"
    config.write_text(
        config.read_text().replace(
            "hydra:\n", "hydra:\n  run: {dir: outputs/same-second}\n  sweep: {dir: multirun/same-second}\n", 1
        )
    )


def _start(repo, *args):
    """`python -m src.train ARGS` in `repo`, logging to the repository's own store."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [sys.executable, "-m", "src.train", *args], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _first_run(repo):
    """One run before the concurrent ones, which creates the store."""
    process = _start(repo, "steps=1")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]


def _artifact_text(client, run_id, path, folder):
    return open(client.download_artifacts(run_id, path, str(folder))).read()


def _check_run_logged_only_its_own_files(client, run, tmp_path):
    """The run's config.yaml and history.csv, as logged and as left in its folder, are its own: its lr,
    its metric histories."""
    run_id, lr = run.info.run_id, run.data.params["lr"]
    folder = tmp_path / "download" / run_id
    folder.mkdir(parents=True)
    logged_config = yaml.safe_load(_artifact_text(client, run_id, "config.yaml", folder))
    left_config = yaml.safe_load(open(f"{run.data.tags['output_dir']}/config.yaml"))
    assert str(logged_config["lr"]) == lr and str(left_config["lr"]) == lr
    table = np.loadtxt(io.StringIO(_artifact_text(client, run_id, "history.csv", folder)), delimiter=",", skiprows=1)
    for column, key in ((1, "train/loss"), (2, "train/w"), (3, "train/b")):
        logged = [m.value for m in client.get_metric_history(run_id, key)]
        np.testing.assert_array_equal(table[:, column], logged)


@pytest.mark.slow
def test_runs_started_together_each_get_a_folder_and_log_their_own_files(repo, tmp_path):
    _same_name_for_every_run(repo)
    _first_run(repo)
    lrs = [f"0.00{i}" for i in range(1, RUNS + 1)]
    processes = [_start(repo, f"lr={lr}", "steps=300") for lr in lrs]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]

    client, all_runs = runs(repo)
    started = [r for r in all_runs if r.data.params["steps"] == "300"]
    assert sorted(r.data.params["lr"] for r in started) == sorted(lrs)
    folders = {r.data.tags["output_dir"] for r in all_runs}
    assert len(folders) == RUNS + 1, "two runs shared a folder"
    assert {f.rsplit("/", 1)[1] for f in folders} == {"same-second"} | {f"same-second-{n}" for n in range(2, RUNS + 2)}
    for run in started:
        _check_run_logged_only_its_own_files(client, run, tmp_path)


@pytest.mark.slow
def test_sweeps_started_together_each_get_a_folder(repo, tmp_path):
    _same_name_for_every_run(repo)
    _first_run(repo)
    sweeps = [_start(repo, "-m", "lr=0.001,0.002", "steps=200"), _start(repo, "-m", "lr=0.003,0.004", "steps=200")]
    for process in sweeps:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]

    client, all_runs = runs(repo)
    jobs = [r for r in all_runs if "sweep_job" in r.data.tags]
    assert sorted(r.data.params["lr"] for r in jobs) == ["0.001", "0.002", "0.003", "0.004"]
    assert len({r.data.tags["output_dir"] for r in jobs}) == 4
    sweep_folders = {r.data.tags["output_dir"].rsplit("/", 1)[0] for r in jobs}
    assert {f.rsplit("/", 1)[1] for f in sweep_folders} == {"same-second", "same-second-2"}
    for run in jobs:
        _check_run_logged_only_its_own_files(client, run, tmp_path)
    assert len({r.data.tags["mlflow.parentRunId"] for r in jobs}) == 2


@pytest.mark.slow
def test_a_folder_given_on_the_command_line_is_used_as_it_is(tmp_path, tracking_env):
    folder = tmp_path / "mine"
    folder.mkdir()
    done = run_cli("steps=5", f"hydra.run.dir={folder}", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(tracking_env["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs([client.get_experiment_by_name("autograd-fit").experiment_id])
    assert run.data.tags["output_dir"] == str(folder)
    assert not list(tmp_path.glob("mine-*"))
