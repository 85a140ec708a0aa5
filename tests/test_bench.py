"""The benchmarks run end to end in their tiny modes, so that they cannot rot. Nothing is timed here."""

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, train_here

pytestmark = pytest.mark.slow


def test_bench_tiny_writes_every_table(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "bench.md").read_text()
    for heading in (
        "## Goals",
        "## End to end",
        "## Sweeps",
        "## Per step",
        "second core busy",
        "## Peak RSS",
        "## GPU",
    ):
        assert heading in table
    assert "BLAS threads: " in table and "openblas" in table and "load average" in table
    goals = table.split("## Goals")[1].split("\n\n")[1].splitlines()[2:]
    assert len(goals) == 11 and sum(row.split(" | ")[3] in ("yes", "no") for row in goals) == 9, goals
    for n in ("1e+02", "1e+03"):
        assert f"| {n} | float32 |" in table and f"| {n} | float64 |" in table
    assert "| 0.0e+00 |" in table  # the numpy backend follows §2.6 exactly
    assert (tmp_path / "per_step.png").stat().st_size > 10_000


def test_the_floor_does_the_same_job_as_a_training_run_with_no_environment(tmp_path, monkeypatch):
    """The floor logs what `python -m src.train` logs, and needs no MLFLOW_TRACKING_URI to do it."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.floor"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    train_here(output_dir=tmp_path / "out")
    client = MlflowClient(uri)
    [floor] = client.search_runs([client.get_experiment_by_name("floor").experiment_id])
    [train] = client.search_runs([client.get_experiment_by_name("autograd-fit").experiment_id])
    assert set(floor.data.params) == set(train.data.params) - {"lr_bound"}
    assert floor.data.params["lr"] == train.data.params["lr"] and floor.data.params["data.n"] == "100"
    assert set(floor.data.metrics) == set(train.data.metrics)
    assert floor.data.metrics["final_w"] == train.data.metrics["final_w"]  # the same fit
    for key in ("loss", "log10_loss", "w", "b"):
        assert len(client.get_metric_history(floor.info.run_id, f"train/{key}")) == 800
    artifacts = {a.path for a in client.list_artifacts(floor.info.run_id)}
    assert {"loss.png", "fit.png", "config.yaml", "history.csv"} <= artifacts
    assert len(floor.inputs.dataset_inputs) == 2 and floor.outputs.model_outputs


def test_sweep_bench_tiny_lands_every_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_sweep", "--jobs", "2", "--out", str(tmp_path / "sweep.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "sweep.md").read_text()
    assert table.count("| 2/2 |") == 2, table
