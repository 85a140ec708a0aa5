"""The floor for one training run's end-to-end cost: the least any script could do for the same record.

It imports numpy, matplotlib and MLflow, fits with the numpy backend, logs one MLflow run
with the same 2,400 metric points in one `log_batch`, and logs the same two figures.
No Hydra, no config checks, no files besides MLflow's. `python -m experiments.bench`
times it against `python -m src.train backend=numpy`.
"""

import os
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from src.backends.numpy_gd import fit  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 100)
    y = 3 * x**2 + 2 + 0.2 * rng.random(100)
    history = fit(x, y, rng.random(), rng.random(), lr=0.001, steps=800)

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("floor")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("floor")
    run_id = client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(v), now, step)
        for key, values in (("loss", history.loss), ("w", history.w), ("b", history.b))
        for step, v in enumerate(values)
    ]
    client.log_batch(run_id, metrics=metrics)
    fig, ax = plt.subplots()
    ax.plot(history.loss)
    client.log_figure(run_id, fig, "loss.png")
    fig, ax = plt.subplots()
    ax.scatter(x, y)
    ax.plot(x, history.w[-1] * x**2 + history.b[-1], "r-")
    client.log_figure(run_id, fig, "fit.png")
    client.set_terminated(run_id)


if __name__ == "__main__":
    main()
