"""Scale-out on a real cluster: Slurm jobs reporting to a PostgreSQL-backed `mlflow server`.

They need what `cluster/up.sh` starts (as root; `.ci/run` does it before `make test`) and
skip, saying so, where it is not running. Each test records into an experiment of its own on
the shared server, and checks the server's PostgreSQL database directly as well as through MLflow.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from src.backends import kept_steps
from tests.conftest import ROOT, free_port, run_cli

CLUSTER_DIR = Path(os.environ.get("CLUSTER_DIR", "/tmp/autograd-cluster"))
# One cluster, one worker: the tests share its server (one of them restarts it) and its two CPUs.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]


def _slurmctld_alive() -> bool:
    """Whether the slurmctld that cluster/up.sh started runs (asked without Slurm: sinfo waits 9 s to fail)."""
    pid_file = CLUSTER_DIR / "slurmctld.pid"
    return pid_file.exists() and psutil.pid_exists(int(pid_file.read_text().split()[0]))


if not ((CLUSTER_DIR / "env.sh").exists() and _slurmctld_alive()):
    pytest.skip("no local cluster running: run cluster/up.sh (as root) first", allow_module_level=True)


def _cluster_env() -> dict[str, str]:
    """The variables cluster/up.sh wrote to env.sh (SLURM_CONF, MLFLOW_TRACKING_URI)."""
    lines = (CLUSTER_DIR / "env.sh").read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    env = {**os.environ, **_cluster_env()}
    up = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, check=False)
    assert up.returncode == 0, f"cluster/up.sh's Slurm does not answer (sinfo: {up.stderr.strip()})"
    return env


@pytest.fixture
def experiment(cluster) -> tuple[dict[str, str], str]:
    """The cluster's environment, and a fresh experiment name for this test."""
    return cluster, f"cluster-{uuid.uuid4().hex[:8]}"


def _client(env):
    from mlflow.tracking import MlflowClient

    return MlflowClient(env["MLFLOW_TRACKING_URI"])


def _sweep_runs(env, experiment_name):
    """The sweep's parent run and its children, from the tracking server."""
    client = _client(env)
    experiment_id = client.get_experiment_by_name(experiment_name).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def _postgres_count(experiment_name: str) -> int:
    """Runs of `experiment_name` in the server's PostgreSQL database, read with psycopg, not MLflow."""
    import psycopg

    store = _cluster_env()["CLUSTER_STORE_URI"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(store) as con:
        query = "SELECT count(*) FROM runs JOIN experiments USING (experiment_id) WHERE experiments.name = %s"
        return con.execute(query, (experiment_name,)).fetchone()[0]


def _start_slurm_sweep(env, name: str, cwd: Path, *overrides: str) -> subprocess.Popen:
    """A sweep on the cluster, in the background, its console output collected."""
    command = [sys.executable, "-m", "src.train", "-m", "hydra/launcher=slurm", *overrides, f"experiment_name={name}"]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_runs(env, name: str, sweep: subprocess.Popen, filter_string: str, count: int) -> list:
    """The runs of experiment `name` that match `filter_string`, once there are `count` of them."""
    client, deadline = _client(env), time.monotonic() + 180
    while True:
        assert sweep.poll() is None and time.monotonic() < deadline, f"never {count} run(s) with {filter_string!r}"
        experiment = client.get_experiment_by_name(name)
        found = client.search_runs([experiment.experiment_id], filter_string) if experiment else []
        if len(found) >= count:
            return found
        time.sleep(0.5)


def _readme_slurm_recipe() -> list[str]:
    """The sweep command of the Slurm recipe in docs/sweeps.md, as words."""
    readme = (ROOT / "docs" / "sweeps.md").read_text()
    recipe = readme[readme.index("### On a Slurm cluster") : readme.index("The recipe is tested as written")]
    [line] = [ln.strip() for ln in recipe.splitlines() if ln.strip().startswith("python -m src.train -m")]
    return shlex.split(line.split("#")[0])[3:]  # after `python -m src.train`


def test_the_readme_slurm_recipe_runs_8_jobs_nested_under_one_parent_on_postgres(experiment, tmp_path):
    env, name = experiment
    args = _readme_slurm_recipe()
    done = run_cli(*args, f"experiment_name={name}", cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "sacct" not in output and "Bypassing" not in output, "status polling is not quiet"
    client, parent, children = _sweep_runs(env, name)
    assert len(children) == 8 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.params["backend.name"] for c in children} == {"numpy", "torch"}
    assert all(c.data.tags.get("owner.slurm_job") for c in children), "a job did not run as a Slurm job"
    assert all(len(client.get_metric_history(c.info.run_id, "train/loss")) == 800 for c in children)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 8
    assert client.get_model_version_by_alias(name, "best").run_id == parent.data.tags["best_run_id"]
    assert _postgres_count(name) == 9  # the parent and its 8 jobs, in PostgreSQL itself


def test_a_scancelled_job_ends_killed_and_the_sweep_counts_it(experiment, tmp_path):
    env, name = experiment
    sweep = _start_slurm_sweep(env, name, tmp_path, "lr=0.001,0.002,0.003", "steps=5000000", "log_every=10000")
    found = _wait_for_runs(env, name, sweep, "tags.sweep_job = '0' and attributes.status = 'RUNNING'", count=1)
    job = found[0].data.tags["owner.slurm_job"]
    subprocess.run(["scancel", job], env=env, check=True)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output[-3000:]
    _, parent, children = _sweep_runs(env, name)
    status = {c.data.tags["sweep_job"]: c.info.status for c in children}
    assert status == {"0": "KILLED", "1": "FINISHED", "2": "FINISHED"}
    assert parent.info.status == "FINISHED"
    assert (parent.data.metrics["jobs"], parent.data.metrics["jobs_finished"]) == (3, 2)
    assert "sweep: 2/3 jobs finished" in output


def test_a_tracking_server_restarted_mid_sweep_loses_no_run(experiment, tmp_path):
    env, name = experiment
    sweep = _start_slurm_sweep(env, name, tmp_path, "lr=0.001,0.002", "steps=100000", "log_every=125")
    _wait_for_runs(env, name, sweep, "", count=3)  # the parent and both jobs
    server = int((CLUSTER_DIR / "mlflow.pid").read_text())
    os.killpg(server, signal.SIGTERM)  # the server goes down while both jobs train
    time.sleep(15)
    restarted = subprocess.run(["bash", str(ROOT / "cluster" / "up.sh")], capture_output=True, text=True, check=False)
    assert restarted.returncode == 0, restarted.stderr
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output[-3000:]
    client, parent, children = _sweep_runs(env, name)
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    kept = kept_steps(100000, 125)  # steps 0, 125, ..., and the last
    assert all(len(client.get_metric_history(c.info.run_id, "train/loss")) == kept for c in children)
    assert parent.info.status == "FINISHED"


def test_32_jobs_land_on_the_postgres_server(experiment, tmp_path):
    env, name = experiment
    seeds = ",".join(str(s) for s in range(32))
    done = run_cli("-m", "hydra/launcher=slurm", f"seed={seeds}", f"experiment_name={name}",
                   cwd=tmp_path, env=env, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client, parent, children = _sweep_runs(env, name)
    assert len(children) == 32 and {c.info.status for c in children} == {"FINISHED"}
    assert all(len(client.get_metric_history(c.info.run_id, "train/loss")) == 800 for c in children)
    assert parent.data.metrics["jobs_finished"] == 32
    assert _postgres_count(name) == 33


@pytest.mark.serial  # timed
@pytest.mark.parametrize("database", ["a port where nothing listens", "a database that does not exist"])
def test_a_postgres_store_that_cannot_be_opened_is_one_line_within_seconds(database, cluster, tmp_path):
    port = re.search(r":(\d+)/", _cluster_env()["CLUSTER_STORE_URI"]).group(1)
    uri = {
        "a port where nothing listens": f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{free_port()}/mlflow",
        "a database that does not exist": f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{port}/nowhere",
    }[database]
    started = time.monotonic()
    done = run_cli("steps=5", cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot open the database of the MLflow store postgresql+psycopg://postgres:***@")
    assert "hunter2" not in done.stdout + done.stderr
    assert elapsed < 10, f"{elapsed:.1f} s: MLflow's own retries were not cut short"
