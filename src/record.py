"""What a run records in MLflow: its tags, datasets, model, params, the per-step history in one
batch, the final scores, and its files (`record_fit`); and the links that show it. The store and the
run's lifecycle are src/infra's."""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from src import models, plots
from src.infra.provenance import provenance_tags
from src.stores import default_uri, is_server, project_root, tracking_uri


def current_client() -> MlflowClient:
    """A client for the current tracking URI."""
    return MlflowClient(tracking_uri())


def standard_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """`tags` plus MLflow's own source, user and git tags, for a run made with the client API."""
    from mlflow.tracking.context.registry import resolve_tags

    return resolve_tags(dict(tags))


def log_dataset(run_id: str, x: np.ndarray, y: np.ndarray, name: str, context: str, source: str | None):
    """(x, y) as one of the run's dataset inputs: its digest, shape and `source` (a DVC path) in the
    Dataset column. Returns the dataset, which `scores` links metrics to."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():  # MLflow 3.17 registers its local-file source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(x, targets=y, source=source, name=name)
    entry = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
    MlflowClient(tracking_uri()).log_inputs(run_id, datasets=[entry])
    return dataset


MODEL_CODE = Path(__file__).with_name("model.py")


def log_model(model, w: float, b: float, x_example: np.ndarray) -> str:
    """The fit as an MLflow pyfunc model `model` of the active run; returns its id (`m-...`; its
    models:/ URI is tagged on the run).

    The model is `src/model.py`, logged as code, with the model module (src/models/) as its artifact
    `formula` and w and b in its artifact `fit.json`: loading it needs numpy and mlflow only, not
    this repository.
    """
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"x": np.asarray(x_example, dtype=np.float64)})
    prediction = models.values(model, example["x"].to_numpy(), w, b)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)  # "Validating input example ...", every run
    with tempfile.TemporaryDirectory(prefix="model-") as private:
        code, fit = Path(private) / MODEL_CODE.name, Path(private) / "fit.json"  # made here, so with the mode
        code.write_bytes(MODEL_CODE.read_bytes())  # the umask gives: MLflow copies each file's own mode
        formula = Path(private) / Path(model.__file__).name
        formula.write_bytes(Path(model.__file__).read_bytes())
        fit.write_text(json.dumps({"w": float(w), "b": float(b)}))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"fit": str(fit), "formula": str(formula)},
            signature=infer_signature(example, prediction),
            input_example=example,
            pip_requirements=[f"mlflow=={metadata.version('mlflow')}", f"numpy=={metadata.version('numpy')}"],
        )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_id


MODEL_URI_TAG = "model_uri"  # the models:/m-... URI of the run's logged model


HELD_OUT_TAG = "held_out_sha256"  # on a run and its model's versions: the data its test_mse was measured on


def browse_hint() -> str:
    """One line saying how to open the store in `mlflow ui`."""
    uri = tracking_uri()
    if is_server(uri):
        return f"to browse it: open {uri}"
    if uri != default_uri():
        return f"to browse it: mlflow ui --backend-store-uri {uri}   (then open http://127.0.0.1:5000)"
    return f"to browse it: cd {project_root()} && make ui   (or mlflow ui, then open http://127.0.0.1:5000)"


def run_link(run_id: str, experiment_id: str) -> str:
    """The run's page in `mlflow ui` (or on the tracking server)."""
    uri = tracking_uri()
    base = uri.rstrip("/") if is_server(uri) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def run_tags(backend: str, device: str) -> dict[str, str]:
    """A training run's tags: its provenance, and the backend and device that did the math."""
    return {**provenance_tags(), "backend": backend, "device": device}


def log_files(client: MlflowClient, run_id: str, files: Mapping[str, bytes]) -> None:
    """`files` ({name: bytes}) as artifacts of run `run_id`, copied from a temporary folder of this
    process's own: never from a folder that another run could be writing into."""
    with tempfile.TemporaryDirectory(prefix="run-files-") as private:
        for name, content in files.items():
            path = Path(private) / name
            path.write_bytes(content)  # with the mode the umask gives, which the artifact copy keeps
            client.log_artifact(run_id, str(path))


# MLflow's run page draws a section of charts for each prefix before the last "/", in character
# order, and then "Model metrics", which holds every metric without one. So the curves of training
# are `train/loss`, `train/log10_loss`, `train/w`, `train/b`, and come first; the single values that
# score a fit (`final_loss`, `test_mse`, ...) have no prefix, and come after them, with the names
# that search filters and the runs table's columns use (`metrics.test_mse < 0.01`).
CURVE = "train/"


def curves(history: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: series} with their metric keys."""
    return {CURVE + name: series for name, series in history.items()}


def scores(values: Mapping[str, float], model_id: str | None = None, dataset=None) -> list[Metric]:
    """Single values; those about a fit linked to its model `model_id` and to the dataset they were
    measured on, so that the experiment's Models tab shows them per model, with their data."""
    now = int(time.time() * 1000)
    link = {"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset is not None else {}
    return [Metric(key, float(value), now, 0, model_id=model_id, **link) for key, value in values.items()]


def model_id(run) -> str | None:
    """The id of the model a run logged (from its models:/m-... tag), or None."""
    uri = run.data.tags.get(MODEL_URI_TAG)
    return uri.removeprefix("models:/") if uri else None


def log_params_and_history(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, object],
    history: Mapping[str, np.ndarray],
    final: list[Metric],
    steps: np.ndarray | None = None,
) -> None:
    """Every step of every series in `history` (at step numbers `steps`, else 0, 1, ...), the
    `final` values (from `scores`) and the params, in one batch.

    One `log_batch` instead of a call per value: on SQLite, 2,400 values take about
    0.3 s this way and about 8 s one at a time.
    """
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, int(step))
        for key, values in history.items()
        for step, value in zip(range(len(values)) if steps is None else steps, values, strict=True)
    ]
    metrics += final
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])


DIVERGED_TAG = "diverged"  # "true" on a run whose loss diverged: FAILED, but with a known result


def record_fit(
    client: MlflowClient,
    run_id: str,
    model,
    train_set: tuple[np.ndarray, np.ndarray, str | None],
    test_set: tuple[np.ndarray, np.ndarray, str | None],
    history,
    params: Mapping[str, object],
    files: Mapping[str, bytes],
    fitted: tuple[float, float, float] | None,
) -> float | None:
    """Record a fit in run `run_id`: the training and held-out data (x, y, source file) as its datasets,
    the fitted model with its scores (`fitted`: the final w, b and training loss; None when the fit
    diverged, which has no model), the params, the per-step history in one batch, and the run's
    files. Returns the held-out MSE, None when diverged."""
    (x, y, train_source), (x_test, y_test, test_source) = train_set, test_set
    training = log_dataset(run_id, x, y, name="train", context="training", source=train_source)
    evaluation = log_dataset(run_id, x_test, y_test, name="test", context="evaluation", source=test_source)
    # A diverged run has no final model: its last parameters are the ones whose loss overflowed. The
    # held-out MSE is logged with the fit, so that a FINISHED run always holds its score: a resumed
    # sweep reads it back as the objective, and the model registry ranks versions by it.
    final, test_mse = [], None
    if fitted is not None:
        w, b, final_loss = fitted
        # before the histories: MLflow copies every metric the run has at step 0 onto a new model
        # and reads all their histories to do it, which would cost as much as logging them
        model_id = log_model(model, w, b, x_example=x[:: max(1, len(x) // 5)][:5])
        test_mse = models.mse(model, x_test, y_test, w, b)
        on_training = {"final_loss": final_loss, "final_w": w, "final_b": b}
        held_out = {"test_mse": test_mse, "test_r2": models.r2(model, x_test, y_test, w, b)}
        final = [*scores(on_training, model_id, training), *scores(held_out, model_id, evaluation)]
    series = {"loss": history.loss, "log10_loss": plots.log10_loss(history.loss), "w": history.w, "b": history.b}
    log_params_and_history(client, run_id, params=params, history=curves(series), steps=history.step, final=final)
    log_files(client, run_id, files)  # what this run made, not what its folder holds now
    if fitted is None:
        client.set_tag(run_id, DIVERGED_TAG, "true")
    return test_mse
