"""Train: `python -m src.train [key=value ...]`.

Composes `conf/`, draws the data, fits the chosen model (conf/model/) with the chosen backend
(conf/backend/), and records the run in MLflow (src/record.py). Returns the objective
(`objective=train_loss|test_mse`), so that Hydra sweepers can minimise it; in a multirun, a job
that diverges or cannot run returns inf. What keeps runs and the store safe is in src/infra/.
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import functools
import io
import logging
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import backends, datafiles, models, plots, problem, record, run_folders, stores, sweep
from src.config import Objective, TrainConfig, flatten, load_config
from src.errors import ConfigError, DataFileError, TrainingDiverged, UserError, clean_exit
from src.infra import command_line, lifecycle, limits, store_access
from src.infra.env_values import holds, read_by_hydra, refuse_held

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    run_id: str
    experiment_id: str
    loss: float
    w: float
    b: float
    test_mse: float  # on the held-out set


def train(
    config: TrainConfig,
    resolved: dict,
    data: problem.Problem,
    output_dir: Path,
    extra_tags: dict[str, str] | None = None,
    run_name: str | None = None,
    data_source: str | None = None,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
    held_out_source: str | None = None,
) -> Result:
    """Fit `data` from its start, write the run's files to `output_dir`, and record it all in MLflow.

    `config` is the checked config; `resolved` is the same config as a plain dict, which is logged
    as the run's params and saved as its config.yaml. The training data is logged as the run's
    `training` dataset (its file `data_source`), and a finished fit as its pyfunc `model`, scored by
    its MSE on `held_out` (x, y; its file `held_out_source`), by default the held-out set that the
    config draws. Inside a sweep the run is nested under the sweep's.
    """
    model = _load("model", models.load, config.model.module)
    backend = _load("backend", backends.load, config.backend.module)
    device = _load("device", backend.resolve_device, config.device.value)
    x, y, w0, b0 = data
    bound = check_data(model, x, y)
    if bound is not None and config.lr >= bound:
        log.warning("lr=%g is at or above the stability bound 2/λ_max = %.6g for this data: expect divergence",
                    config.lr, bound)  # fmt: skip
    x_test, y_test = held_out if held_out is not None else problem.make_test_set(config)

    uri = stores.tracking_uri()
    client, experiment_id = store_access.open_experiment(uri, config.experiment_name)
    lifecycle.close_stale_runs(client, experiment_id)  # runs whose process is gone end KILLED
    run_name = run_name or f"{config.model.name} {config.backend.name} lr={config.lr:g} s{config.seed}"  # s: seed
    tags = {
        **record.run_tags(config.backend.name, device),
        "output_dir": str(output_dir.resolve()),
        record.HELD_OUT_TAG: datafiles.digest(x_test, y_test),
        **(extra_tags or {}),
    }
    expected = backends.estimated_seconds(backend, len(x), config.steps)
    limits.warn_if_long(expected, backends.kept_steps(config.steps, config.log_every), config.log_every)
    run = lifecycle.tracked_run(experiment_id, run_name, tags, sweep.sweep_parent(), expected)
    with store_access.store_errors(uri), run as run_id:
        history = backends.checked_fit(backend, model, x, y, w0, b0, lr=config.lr, steps=config.steps,
                                       device=device, every=config.log_every, progress=_progress_bar)  # fmt: skip
        w, b = (float(history.w[-1]), float(history.b[-1])) if len(history.w) else (w0, b0)
        final_loss = models.loss(model, x, y, w, b)
        diverged = history.diverged or not math.isfinite(final_loss)  # never a FINISHED run with a model
        files = _run_files(model, x, y, history, w, b, OmegaConf.to_yaml(resolved))
        datafiles.write_files(output_dir, files)
        params = {**flatten(resolved), **({"lr_bound": bound} if bound is not None else {})}
        test_mse = record.record_fit(client, run_id, model, (x, y, data_source), (x_test, y_test, held_out_source),
                                     history, params, files, None if diverged else (w, b, final_loss))  # fmt: skip
        if diverged:
            raise TrainingDiverged(backends.describe_divergence(history, final_loss, config.lr, bound))
    return Result(run_id, experiment_id, loss=final_loss, w=w, b=b, test_mse=test_mse)


def _load(key: str, load, name: str):
    """`load(name)`, a ValueError turned into the config error of `key`."""
    try:
        return load(name)
    except ValueError as e:
        raise ConfigError(f"config key '{key}': {e}") from e


def check_data(model, x: np.ndarray, y: np.ndarray) -> float | None:
    """The model's stability bound on the training data, once the data is known to have a unique
    optimum and a finite bound where the model states them (the held-out evaluation needs both)."""
    try:
        bound = models.lr_bound(model, x)
        models.optimum(model, x, y)
    except ValueError as e:
        raise DataFileError(f"the training data: {e}") from e
    return bound


def _progress_bar(steps: Iterable[int]) -> Iterable[int]:
    """A progress bar over the steps, on a terminal only, and only once training has taken 2 s."""
    if not sys.stderr.isatty():
        return steps
    from tqdm import tqdm  # only a terminal needs it

    return tqdm(steps, delay=2, unit="step", leave=False, dynamic_ncols=True)


def _run_files(model, x: np.ndarray, y: np.ndarray, history, w: float, b: float, config_yaml: str) -> dict:
    """The files a run leaves in its folder and logs to MLflow, made in memory: {name: bytes}."""
    table = np.column_stack([history.step, history.loss, history.w, history.b])
    csv = io.StringIO()
    np.savetxt(csv, table, delimiter=",", header="step,loss,w,b", comments="", fmt=["%d"] + ["%.17g"] * 3)
    return {
        "loss.png": plots.png(plots.plot_loss(history.step, history.loss)),
        "fit.png": plots.png(plots.plot_fit(model, x, y, w, b)),
        "config.yaml": config_yaml.encode(),
        "history.csv": csv.getvalue().encode(),
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train once; return the objective (the final training loss, or the held-out MSE) for sweepers."""
    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    hidden = frozenset(read_by_hydra(flatten(OmegaConf.to_container(hydra_config, resolve=False))))
    if hydra_config.mode != RunMode.MULTIRUN:
        with clean_exit():
            try:
                return _train_once(cfg, output_dir, hidden=hidden)
            except UserError:
                run_folders.discard(output_dir)  # a run that never started leaves no folder behind
                raise
    sweep.watch_the_sweep()
    try:
        with clean_exit():
            number, name = hydra_config.job.num, sweep.job_name(hydra_config.overrides.task)
            once = functools.partial(_train_once, cfg, output_dir, job=(number, name), hidden=hidden)
            return sweep.run_job(once, output_dir, number, name)
    finally:
        sweep.leave_if_the_sweep_is_gone()


# The `output_dir` tag of a run whose folder's path holds a value read from the environment.
HIDDEN_FOLDER = "hidden: its path holds a value read from the environment"


def _train_once(
    cfg: DictConfig, output_dir: Path, job: tuple[int, str] | None = None, hidden: frozenset[str] = frozenset()
) -> float:
    """Check `cfg`, draw its data and train; `job` is (number, run name) inside a sweep; `hidden`, the
    values Hydra's settings read from the environment, which nothing the run records may hold."""
    config = load_config(cfg)
    refuse_held(flatten(OmegaConf.to_container(cfg, resolve=True)), hidden)
    limits.check_memory(config.data.n, backends.kept_steps(config.steps, config.log_every))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    data = problem.make_problem(config)
    tags = {"output_dir": HIDDEN_FOLDER} if holds(str(output_dir.resolve()), hidden) else {}
    name = None
    if job is not None:
        number, name = job
        job_tags, earlier = sweep.job_tags_or_result(resolved, data.x, data.y, config.objective.value, number, name)
        if earlier is not None:
            return earlier
        tags |= job_tags
    result = train(config, resolved, data, output_dir, tags, name)
    log_summary(result, config.experiment_name, browse_hint=job is None)
    return result.test_mse if config.objective is Objective.test_mse else result.loss


def log_summary(result: Result, experiment_name: str, browse_hint: bool = True) -> None:
    log.info("final loss %.6g  w %.6f  b %.6f", result.loss, result.w, result.b)
    log.info("MLflow run %s in experiment '%s' at %s", result.run_id, experiment_name, stores.tracking_uri())
    log.info("run page: %s", record.run_link(result.run_id, result.experiment_id))
    if browse_hint:
        log.info("%s", record.browse_hint())


if __name__ == "__main__":
    with clean_exit():  # in a multirun, this process launches the jobs: an interrupt stops them all (src.sweep)
        command_line.check(sys.argv[1:])
        main()
