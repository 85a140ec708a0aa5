"""The MLflow edge, against a real SQLite store."""

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from src import tracking


def test_default_store_is_the_project_root_database(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    assert tracking.tracking_uri() == f"sqlite:///{root / 'mlflow.db'}"


def test_environment_overrides_the_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}"
    client, experiment_id = tracking.open_experiment(uri, "test-exp")
    return client, experiment_id, tmp_path / "sub"


def test_open_experiment_creates_store_and_artifact_root_beside_it(store):
    client, experiment_id, folder = store
    assert (folder / "mlflow.db").exists()
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "test-exp"
    assert experiment.artifact_location == (folder / "mlruns").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on its runs
    # Opening again finds the same experiment instead of creating a second one.
    assert tracking.open_experiment(f"sqlite:///{folder / 'mlflow.db'}", "test-exp")[1] == experiment_id


@pytest.mark.parametrize(
    "raised,status",
    [(None, "FINISHED"), (RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_tracked_run_always_ends(store, raised, status):
    client, experiment_id, _ = store
    with pytest.raises(type(raised)) if raised else nullcontext():
        with tracking.tracked_run(experiment_id, "r", {"k": "v"}) as run_id:
            if raised:
                raise raised
    run = client.get_run(run_id)
    assert run.info.status == status
    assert run.data.tags["k"] == "v"
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.type"] == "LOCAL"  # MLflow's own
    if raised:
        assert run.data.tags.get("error") == (str(raised) or None)


def test_history_is_logged_step_by_step_in_one_batch(store):
    client, experiment_id, _ = store
    loss = np.linspace(10.0, 1.0, 800)
    with tracking.tracked_run(experiment_id, "r", {}) as run_id:
        tracking.log_params_and_history(
            client, run_id, {"data.n": 100, "lr": 0.001}, {"loss": loss, "w": -loss}, {"final_loss": 0.5}
        )
    points = client.get_metric_history(run_id, "loss")
    assert [p.step for p in points] == list(range(800))
    np.testing.assert_array_equal([p.value for p in points], loss)
    run = client.get_run(run_id)
    assert run.data.params == {"data.n": "100", "lr": "0.001"}
    assert run.data.metrics["final_loss"] == 0.5
    assert run.data.metrics["w"] == -1.0  # the latest step's value


def test_run_tags_name_the_code_and_versions():
    tags = tracking.run_tags("numpy", "cpu")
    assert tags["backend"] == "numpy" and tags["device"] == "cpu"
    assert tags["git_dirty"] in {"true", "false"}
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert tags["numpy_version"] == np.__version__
    assert tags["torch_version"].startswith("2.")


@pytest.mark.slow
def test_system_metrics_only_for_runs_expected_to_last(store):
    client, experiment_id, _ = store
    with tracking.tracked_run(experiment_id, "long", {}, expected_seconds=tracking.SYSTEM_METRICS_MIN_SECONDS) as long:
        time.sleep(2.5)  # the sampling interval is 1 s
    with tracking.tracked_run(experiment_id, "short", {}, expected_seconds=0.5) as short:
        time.sleep(1.5)
    long_metrics, short_metrics = (client.get_run(r).data.metrics for r in (long, short))
    assert "system/cpu_utilization_percentage" in long_metrics
    assert len(client.get_metric_history(long, "system/cpu_utilization_percentage")) >= 2
    assert not [k for k in short_metrics if k.startswith("system/")]
