"""`@best` is the best: a new model version takes it only by beating its holder on the same held-out data."""

import logging

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from src import record, registry
from src.config import load_config
from src.problem import make_problem
from src.train import train
from tests.conftest import compose_config

NAME = "autograd-fit"


def _fit(tmp_path, *overrides: str) -> tuple[str, float]:
    """Train in-process on the composed config; return the run's id and its held-out MSE."""
    cfg = compose_config(*overrides)
    config = load_config(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    result = train(config, resolved, make_problem(config), tmp_path / "runs" / "-".join(overrides))
    return result.run_id, result.test_mse


def _best(client) -> str:
    return str(client.get_model_version_by_alias(NAME, "best").version)


@pytest.mark.slow
def test_a_version_takes_best_only_by_beating_its_holder_on_the_same_held_out_data(tmp_path, tracking_env, caplog):
    caplog.set_level(logging.INFO, logger="src.registry")
    client = MlflowClient(tracking_env["MLFLOW_TRACKING_URI"])

    run, score = _fit(tmp_path, "steps=100")
    first = registry.register_model(run, NAME)
    assert first.best and _best(client) == first.version
    assert "it takes @best (held-out MSE" in caplog.text

    worse_run, worse = _fit(tmp_path, "steps=20")
    assert worse > score  # a fit stopped early is further from the data
    second = registry.register_model(worse_run, NAME)
    assert not second.best and _best(client) == first.version
    assert f"version {second.version} (models:/{NAME}/latest); not @best: held-out MSE {worse:.6g} does not beat " \
           f"version {first.version}'s {score:.6g}" in caplog.text  # fmt: skip
    mlflow.set_tracking_uri(tracking_env["MLFLOW_TRACKING_URI"])
    assert mlflow.models.get_model_info(f"models:/{NAME}/latest").run_id == worse_run  # the newest, MLflow's name

    better_run, better = _fit(tmp_path, "steps=800")
    assert better < score
    third = registry.register_model(better_run, NAME)
    assert third.best and _best(client) == third.version
    assert f"it takes @best: held-out MSE {better:.6g} beats version {first.version}'s {score:.6g}" in caplog.text

    # Another seed draws other held-out data: however low its score, it is not compared with @best's.
    other_run, _ = _fit(tmp_path, "steps=800", "seed=1")
    fourth = registry.register_model(other_run, NAME)
    assert not fourth.best and _best(client) == third.version
    assert "scored on other held-out data" in fourth.why

    versions = {str(v.version): v for v in client.search_model_versions(f"name='{NAME}'")}
    assert float(versions[third.version].tags["test_mse"]) == better
    run_tags = client.get_run(better_run).data.tags
    assert versions[third.version].tags[record.HELD_OUT_TAG] == run_tags[record.HELD_OUT_TAG]


def test_a_holder_with_no_record_of_its_held_out_data_gives_way():
    """A version registered before versions recorded their held-out data cannot be compared: it gives @best up."""
    from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

    old = ModelVersion(NAME, "3", creation_timestamp=0)  # no tags, as older versions have
    best, why = registry._takes_best(0.5, "d" * 64, old)
    assert best and why == "it takes @best (held-out MSE 0.5) from version 3, which has no record of its held-out data"
    tags = [ModelVersionTag(record.HELD_OUT_TAG, "d" * 64), ModelVersionTag("test_mse", "0.4")]
    recorded = ModelVersion(NAME, "4", creation_timestamp=0, tags=tags)
    assert registry._takes_best(0.5, "d" * 64, recorded)[0] is False
    assert registry._takes_best(0.3, "d" * 64, recorded)[0] is True
