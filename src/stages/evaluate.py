"""DVC stage `evaluate`: the fit on held-out data, against the closed-form optimum and the truth.

Writes the headline metrics to `metrics.json`, every other number to a details file, and the
evaluation plots, and logs them all into the MLflow run that made the model: the newest run
tagged with the digest of `fit.json` (see the `train` stage).
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np

from src import datafiles, models, plots, record, registry, stores
from src.errors import DataFileError
from src.infra import store_access
from src.stages import MODEL_TAG, load_params, stage_errors

log = logging.getLogger(__name__)
# The headline metrics, the only ones in `metrics.json`: `dvc exp show` puts every metric
# column before the params, so each further metric there hides a param at a terminal's width.
SUMMARY = ("test_mse", "test_r2", "loss_gap")


def evaluate(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    w: float,
    b: float,
    true_w: float,
    true_b: float,
) -> dict[str, float]:
    """Test MSE and R², the distance to the generating (true_w, true_b), and, when the model states
    its exact optimum (w*, b*) on the training data, that optimum and the gaps to it."""
    train_loss = models.loss(model, x_train, y_train, w, b)
    test_mse = models.mse(model, x_test, y_test, w, b)  # the score `train` logged, and the registry ranks by
    metrics = {
        "test_mse": test_mse,
        "test_r2": models.r2(model, x_test, y_test, w, b),
        "train_loss": train_loss,
        "w_error": abs(w - true_w),
        "b_error": abs(b - true_b),
    }
    try:
        optimum = models.optimum(model, x_train, y_train)
    except ValueError as e:
        raise DataFileError(f"the training data: {e}") from e
    if optimum is None:
        return metrics
    w_star, b_star = optimum
    optimal_loss = models.loss(model, x_train, y_train, w_star, b_star)
    return metrics | {
        "optimal_loss": optimal_loss,
        "loss_gap": train_loss - optimal_loss,
        "w_star": w_star,
        "b_star": b_star,
        "w_gap": abs(w - w_star),
        "b_gap": abs(b - b_star),
    }


def _read_loss(history_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """The step numbers and the losses of a training history."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            table = np.loadtxt(history_csv, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataFileError(f"{history_csv}: cannot read the training history ({e}); rerun `dvc repro`") from e
    if table.shape[0] == 0 or table.shape[1] < 2:
        raise DataFileError(f"{history_csv}: no steps in the training history; rerun `dvc repro -f train`")
    return table[:, 0], table[:, 1]


def _run_that_made(fit_json: Path, experiment_name: str) -> str:
    """The MLflow run that wrote `fit_json`; found before anything is written, so a miss leaves no files."""
    digest = datafiles.md5(fit_json)
    uri = stores.tracking_uri()
    with store_access.store_errors(uri):
        run_id = registry.latest_run_tagged(record.current_client(), experiment_name, MODEL_TAG, digest)
    if run_id is None:
        raise DataFileError(
            f"{fit_json}: no run in MLflow experiment '{experiment_name}' at {uri} made this model "
            f"({MODEL_TAG} {digest}); retrain it with `dvc repro -f train`"
        )
    return run_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="the training CSV from `generate`")
    parser.add_argument("--test", required=True, help="the test CSV from `generate`")
    parser.add_argument("--model", required=True, help="the folder the `train` stage wrote")
    parser.add_argument("--metrics", required=True, help="JSON to write the headline metrics to")
    parser.add_argument("--details", required=True, help="JSON to write the other metrics to")
    parser.add_argument("--plots", required=True, help="folder for loss.csv, loss.png and fit.png")
    args = parser.parse_args(argv)
    with stage_errors():
        config, _ = load_params(args.params)
        x_train, y_train = datafiles.read_xy(args.train)
        x_test, y_test = datafiles.read_xy(args.test)
        model = Path(args.model)
        fit = datafiles.read_json(model / "fit.json", numbers=("w", "b"))
        step, loss = _read_loss(model / "history.csv")
        run_id = _run_that_made(model / "fit.json", config.experiment_name)

        formula = models.load(config.model.module)
        metrics = evaluate(formula, x_train, y_train, x_test, y_test, fit["w"], fit["b"], config.data.true_w,
                           config.data.true_b)  # fmt: skip
        out = Path(args.plots)
        with datafiles.atomic_path(out / "loss.csv") as tmp:
            table = np.column_stack([step, loss, plots.log10_loss(loss)])  # DVC's chart has a linear axis only
            np.savetxt(
                tmp, table, delimiter=",", header="step,loss,log10_loss", comments="", fmt=["%d", "%.17g", "%.17g"]
            )
        plots.save(plots.plot_loss(step, loss, optimum=metrics.get("optimal_loss")), out / "loss.png")
        optimum = (metrics["w_star"], metrics["b_star"]) if "w_star" in metrics else None
        figure = plots.plot_evaluation(formula, x_train, y_train, x_test, y_test, fit["w"], fit["b"], optimum)
        plots.save(figure, out / "fit.png")
        datafiles.write_json(Path(args.details), {k: v for k, v in metrics.items() if k not in SUMMARY})
        datafiles.write_json(Path(args.metrics), {k: metrics[k] for k in SUMMARY if k in metrics})

        with store_access.store_errors(stores.tracking_uri()):
            client = record.current_client()
            record.log_dataset(run_id, x_test, y_test, name="test", context="evaluation", source=args.test)
            # The held-out MSE and R² are the model's scores, which `train` logged with it; the rest
            # describe the training data's optimum, and are the run's.
            others = {k: v for k, v in metrics.items() if k not in ("test_mse", "test_r2")}
            record.log_params_and_history(client, run_id, params={}, history={}, final=record.scores(others))
            for name in ("loss.csv", "loss.png", "fit.png"):
                client.log_artifact(run_id, str(out / name), artifact_path="evaluation")
            client.log_artifact(run_id, args.metrics, artifact_path="evaluation")
            client.log_artifact(run_id, args.details, artifact_path="evaluation")
        gap = f", gap to the optimal loss {metrics['loss_gap']:.3g}" if "loss_gap" in metrics else ""
        log.info("test MSE %.6g, R² %.6f%s", metrics["test_mse"], metrics["test_r2"], gap)


if __name__ == "__main__":
    main()
