"""The model registry: each pipeline model is a version of the experiment's registered model, and
the alias `@best` moves to a version only when its held-out MSE beats the holder's on the same data."""

from __future__ import annotations

import getpass
import io
import logging
from contextlib import redirect_stderr
from typing import NamedTuple

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from src.record import HELD_OUT_TAG, MODEL_URI_TAG
from src.stores import tracking_uri

log = logging.getLogger(__name__)


BEST_ALIAS = "best"


class Registration(NamedTuple):
    version: str
    best: bool  # whether the new version took @best
    why: str


def register_model(run_id: str, name: str) -> Registration:
    """Register run `run_id`'s model as a new version of `name`; move `@best` to it only if it is better.

    Better means a lower held-out MSE (`test_mse`) than the version that holds `@best`, measured
    on the same held-out data (`HELD_OUT_TAG`, a digest of it). A model scored on other data is
    not compared, and does not take `@best`. Every new version is `models:/<name>/latest` (MLflow's
    own name for the newest) until the next. The console says what the version got, and why.
    """
    client = MlflowClient(tracking_uri())
    run = client.get_run(run_id)
    score, data = run.data.metrics["test_mse"], run.data.tags[HELD_OUT_TAG]
    holder = _version_with_alias(client, name, BEST_ALIAS)
    with redirect_stderr(io.StringIO()) as printed:  # "Successfully registered model ...", print()ed
        version = mlflow.register_model(
            run.data.tags[MODEL_URI_TAG], name, await_registration_for=0,  # ready at once here
            tags={HELD_OUT_TAG: data, "test_mse": repr(score)},
        ).version  # fmt: skip
    for line in printed.getvalue().splitlines():
        if not line.startswith(("Successfully registered model", "Registered model", "Created version")):
            log.warning("%s", line)
    client.update_model_version(name, version, description=_version_description(run, score))
    best, why = _takes_best(score, data, holder)
    if best:
        client.set_registered_model_alias(name, BEST_ALIAS, version)
    log.info("registered models:/%s version %s (models:/%s/latest); %s", name, version, name, why)
    return Registration(str(version), best, why)


def _version_description(run, score: float) -> str:
    """One line for a model version's page: what fitted it, on which data, how it scored, and who registered it."""
    params, tags = run.data.params, run.data.tags
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}  # as the runs table shows them
    user = tags.get("mlflow.user") or getpass.getuser()
    fit = f"{params.get('backend.name')} lr={params.get('lr')} objective={params.get('objective')}"
    data = f"training data {digests.get('train', 'unknown')}, held-out data {digests.get('test', 'unknown')}"
    return f"{fit}; {data}; held-out MSE {score:.6g}; registered by {user}"


def _version_with_alias(client: MlflowClient, name: str, alias: str):
    """The model version of `name` that holds `alias`, or None (no such model, or no version holds it)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def _takes_best(score: float, data: str, holder) -> tuple[bool, str]:
    """Whether a version scored `score` on held-out data `data` takes @best from `holder`, and why, as a phrase."""
    if holder is None:
        return True, f"it takes @best (held-out MSE {score:.6g}): no version held it"
    held_by, recorded = f"version {holder.version}", holder.tags.get(HELD_OUT_TAG)
    if recorded is None:
        return (
            True,
            f"it takes @best (held-out MSE {score:.6g}) from {held_by}, which has no record of its held-out data",
        )
    if recorded != data:
        return False, (f"not @best: {held_by} holds it, scored on other held-out data ({recorded[:12]}, this one "
                       f"{data[:12]}); scores on different data are not compared")  # fmt: skip
    old = float(holder.tags["test_mse"])
    if score < old:
        return True, f"it takes @best: held-out MSE {score:.6g} beats {held_by}'s {old:.6g}"
    return False, f"not @best: held-out MSE {score:.6g} does not beat {held_by}'s {old:.6g}, which keeps it"


def latest_run_tagged(client: MlflowClient, experiment_name: str, key: str, value: str) -> str | None:
    """The id of the newest run in `experiment_name` whose tag `key` is `value`, or None."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{key}` = '{value}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
