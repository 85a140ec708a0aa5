"""The floor for one training run's end-to-end cost: the same job as `python -m src.train`, hand-written.

It fits the default problem with the numpy backend and logs one MLflow run as the pipeline does:
the default config (`params.yaml`) as params and as `config.yaml`, the four 800-step histories
in one batch with the final metrics (linked to the model and their data), `loss.png` and `fit.png`,
`history.csv`, the training and test data as dataset inputs, and the fit as a pyfunc model. No
Hydra, no config checks, no output folder.

    python -m benchmarks.floor                # as anyone would write it
    python -m benchmarks.floor --lean-start   # with the pipeline's start-up trick applied too

With no MLFLOW_TRACKING_URI it logs to ./mlflow.db, as the pipeline does from the project root.
`python -m benchmarks.bench` times both against `python -m src.train`.
"""

import sys

LEAN_START = "--lean-start" in sys.argv[1:]
if LEAN_START:  # the imports below make millions of objects and no garbage: no collector passes over them
    import gc

    gc.disable()

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import mlflow  # noqa: E402
import mlflow.data  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402

from src.backends.numpy_gd import fit  # noqa: E402
from src.config import flatten  # noqa: E402
from src.models import quadratic  # noqa: E402

if LEAN_START:
    import atexit

    gc.freeze()
    gc.enable()
    atexit.register(gc.freeze)

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    rng = np.random.default_rng(config["seed"])
    n = config["data"]["n"]
    x = np.linspace(-1, 1, n)
    y = 3 * x**2 + 2 + 0.2 * rng.random(n)
    history = fit(quadratic, x, y, rng.random(), rng.random(), lr=config["lr"], steps=config["steps"])
    w, b = float(history.w[-1]), float(history.b[-1])

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    mlflow.set_experiment("floor")
    with mlflow.start_run():
        run_id = mlflow.active_run().info.run_id
        now = mlflow.utils.time.get_current_time_millis()
        x_test = np.linspace(-1, 1, n)
        y_test = 3 * x_test**2 + 2 + 0.2 * np.random.default_rng([config["seed"], 1]).random(n)
        train_set = mlflow.data.from_numpy(x, targets=y, name="train")
        test_set = mlflow.data.from_numpy(x_test, targets=y_test, name="test")
        mlflow.log_input(train_set, context="training")
        mlflow.log_input(test_set, context="evaluation")
        example = pd.DataFrame({"x": x[:5]})
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "fit.json").write_text(json.dumps({"w": w, "b": b}))
            model = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(ROOT / "src" / "model.py"),
                artifacts={"fit": str(Path(folder) / "fit.json")},
                signature=infer_signature(example, w * example["x"].to_numpy() ** 2 + b),
                input_example=example,
                pip_requirements=[f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"],
            )

        series = {"loss": history.loss, "log10_loss": np.log10(history.loss), "w": history.w, "b": history.b}
        metrics = [
            Metric(f"train/{key}", float(v), now, int(step))
            for key, values in series.items()
            for step, v in zip(history.step, values, strict=True)
        ]
        test_mse = float(np.mean((w * x_test**2 + b - y_test) ** 2))
        final = {"final_loss": float(history.loss[-1]), "final_w": w, "final_b": b}
        test_r2 = float(1 - test_mse / np.var(y_test))
        for values, data in ((final, train_set), ({"test_mse": test_mse, "test_r2": test_r2}, test_set)):
            metrics += [Metric(k, v, now, 0, model.model_id, data.name, data.digest) for k, v in values.items()]
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics, params=[])
        mlflow.log_params(flatten(config))
        mlflow.log_dict(config, "config.yaml")

        fig, ax = plt.subplots()
        ax.semilogy(history.step, history.loss)
        ax.set(xlabel="step", ylabel="loss", title="training loss")
        mlflow.log_figure(fig, "loss.png")
        fig, ax = plt.subplots()
        ax.scatter(x, y, s=8, label="data")
        ax.plot(x, w * x**2 + b, "r-", label=f"fit: w={w:.4f}, b={b:.4f}")
        ax.legend()
        mlflow.log_figure(fig, "fit.png")
        table = pd.DataFrame({"step": history.step, "loss": history.loss, "w": history.w, "b": history.b})
        mlflow.log_text(table.to_csv(index=False), "history.csv")
    print(f"final loss {history.loss[-1]:.6g}, w={w:.6f}, b={b:.6f}")


if __name__ == "__main__":
    main()
