"""The MLflow edge, against a real SQLite store."""

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from src import record, stores
from src.infra import lifecycle, store_access


def test_default_store_is_the_project_root_database(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    assert stores.tracking_uri() == f"sqlite:///{root / 'mlflow.db'}"


def test_environment_overrides_the_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert stores.tracking_uri() == "http://127.0.0.1:5999"


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}"
    client, experiment_id = store_access.open_experiment(uri, "test-exp")
    return client, experiment_id, tmp_path / "sub"


def test_a_copy_of_the_store_template_is_what_a_new_store_there_would_be(tmp_path, migrated_store):
    """tests/conftest.py's `tracking_env` gives tests copies of one migrated store instead of new ones."""
    import sqlite3
    from contextlib import closing

    from tests.conftest import copy_store

    new, copied = tmp_path / "new" / "mlflow.db", tmp_path / "copied" / "mlflow.db"
    new.parent.mkdir()
    copied.parent.mkdir()
    store_access._prepare_store(new)
    copy_store(migrated_store, copied)

    def definition(sql: str | None) -> list[str]:  # MLflow's migrations write a table's constraints in any order
        return sorted(line.strip().rstrip(",").strip() for line in (sql or "").splitlines())

    def contents(db: Path) -> tuple:
        with closing(sqlite3.connect(db)) as con:
            rows = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            schema = [(kind, name, definition(sql)) for kind, name, sql in rows]
            version = con.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = con.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments")
            folder = db.parent.as_uri()
            return schema, version, [(*row[:2], row[2].replace(folder, "<folder>"), row[3]) for row in experiments]

    assert contents(copied) == contents(new)
    assert contents(new)[2] == [(0, "Default", "<folder>/mlruns/0", "active")]  # the only row that names a folder


def test_open_experiment_creates_store_and_artifact_root_beside_it(store):
    client, experiment_id, folder = store
    assert (folder / "mlflow.db").exists()
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "test-exp"
    assert experiment.artifact_location == (folder / "mlruns").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on its runs
    # Opening again finds the same experiment instead of creating a second one.
    assert store_access.open_experiment(f"sqlite:///{folder / 'mlflow.db'}", "test-exp")[1] == experiment_id


@pytest.mark.parametrize(
    "raised,status",
    [(None, "FINISHED"), (RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_tracked_run_always_ends(store, raised, status):
    client, experiment_id, _ = store
    with pytest.raises(type(raised)) if raised else nullcontext():
        with lifecycle.tracked_run(experiment_id, "r", {"k": "v"}) as run_id:
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
    with lifecycle.tracked_run(experiment_id, "r", {}) as run_id:
        record.log_params_and_history(
            client,
            run_id,
            {"data.n": 100, "lr": 0.001},
            record.curves({"loss": loss, "w": -loss}),
            record.scores({"final_loss": 0.5}),
        )
    points = client.get_metric_history(run_id, "train/loss")
    assert [p.step for p in points] == list(range(800))
    np.testing.assert_array_equal([p.value for p in points], loss)
    run = client.get_run(run_id)
    assert run.data.params == {"data.n": "100", "lr": "0.001"}
    assert run.data.metrics == {"train/loss": 1.0, "train/w": -1.0, "final_loss": 0.5}  # latest steps' values


def test_run_tags_name_the_code_and_versions():
    tags = record.run_tags("numpy", "cpu")
    assert tags["backend"] == "numpy" and tags["device"] == "cpu"
    assert tags["git_dirty"] in {"true", "false"}
    assert tags["numpy_version"] == np.__version__
    assert tags["torch_version"].startswith("2.")


@pytest.mark.slow
def test_system_metrics_only_for_runs_expected_to_last(store):
    client, experiment_id, _ = store
    with lifecycle.tracked_run(
        experiment_id, "long", {}, expected_seconds=lifecycle.SYSTEM_METRICS_MIN_SECONDS
    ) as long:
        time.sleep(2.5)  # the sampling interval is 1 s
    with lifecycle.tracked_run(experiment_id, "short", {}, expected_seconds=0.5) as short:
        time.sleep(1.5)
    long_metrics, short_metrics = (client.get_run(r).data.metrics for r in (long, short))
    assert "system/cpu_utilization_percentage" in long_metrics
    assert len(client.get_metric_history(long, "system/cpu_utilization_percentage")) >= 2
    assert not [k for k in short_metrics if k.startswith("system/")]
