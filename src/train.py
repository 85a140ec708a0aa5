"""Train: `python -m src.train [key=value ...]`.

Composes `conf/`, fits the chosen model (conf/model/) with the chosen backend, and records the run in
MLflow: params, per-step loss/w/b, final values, the loss and fit plots, the resolved
config and the history as CSV. Returns the objective (`objective=train_loss|test_mse`),
so Hydra sweepers can minimise it; in a multirun, a diverged job returns inf.
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import backends, datafiles, errors, models, plots, problem, run_folders, sweep, tracking, usage
from src.backends import History, kept_steps
from src.config import Objective, TrainConfig, flatten, holds, load_config, refuse_values_from, values_from_environment
from src.errors import ConfigError, DataFileError, TrainingDiverged, UserError, clean_exit
from src.sampling import make_problem, make_test_set

log = logging.getLogger(__name__)

# `--help` prints hydra.help.template (conf/config.yaml), which is this, for the composed config.
OmegaConf.register_new_resolver(
    "train_help", lambda *, _root_: usage.help_text(OmegaConf.masked_copy(_root_, [k for k in _root_ if k != "hydra"]))
)


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

    `config` is the checked config; `resolved` is the same config as a plain dict, which
    is logged as the run's params and saved as its config.yaml. The training data is logged
    as the run's `training` dataset, with `data_source` (its file) as its source, and a
    finished fit as its pyfunc `model`, scored by its MSE on `held_out` (x, y; its file
    `held_out_source`), by default the held-out set that the config draws (the `generate`
    stage's test set), logged as the `evaluation` dataset. Inside a sweep the run
    is nested under the sweep's.
    """
    try:
        model = models.load(config.model.module)
    except ValueError as e:
        raise ConfigError(f"config key 'model': {e}") from e
    try:
        backend = backends.load(config.backend.module)
    except ValueError as e:
        raise ConfigError(f"config key 'backend': {e}") from e
    try:
        device = backend.resolve_device(config.device.value)
    except ValueError as e:
        raise ConfigError(f"config key 'device': {e}") from e
    x, y, w0, b0 = data
    bound = check_data(model, x, y)
    if bound is not None and config.lr >= bound:
        log.warning(
            "lr=%g is at or above the stability bound 2/λ_max = %.6g for this data: expect divergence", config.lr, bound
        )

    uri = tracking.tracking_uri()
    client, experiment_id = tracking.open_experiment(uri, config.experiment_name)
    run_name = run_name or f"{config.model.name} {config.backend.name} lr={config.lr:g} s{config.seed}"  # s: the seed
    x_test, y_test = held_out if held_out is not None else make_test_set(config)
    tags = {
        **tracking.run_tags(config.backend.name, device),
        "output_dir": str(output_dir.resolve()),
        tracking.HELD_OUT_TAG: datafiles.digest(x_test, y_test),
        **(extra_tags or {}),
    }
    parent = sweep.sweep_parent()
    expected = backends.estimated_seconds(backend, len(x), config.steps)
    _warn_if_long(expected, kept_steps(config.steps, config.log_every), config.log_every)
    with tracking.store_errors(uri), tracking.tracked_run(experiment_id, run_name, tags, parent, expected) as run_id:
        history = backends.checked_fit(
            backend,
            model,
            x,
            y,
            w0,
            b0,
            lr=config.lr,
            steps=config.steps,
            device=device,
            every=config.log_every,
            progress=_progress_bar,
        )
        w, b = (float(history.w[-1]), float(history.b[-1])) if len(history.w) else (w0, b0)
        final_loss = models.loss(model, x, y, w, b)
        # A divergence is a divergence whatever the backend reported (checked_fit checks its history):
        # never a FINISHED run with a model.
        diverged = history.diverged or not math.isfinite(final_loss)
        files = _run_files(model, x, y, history, w, b, OmegaConf.to_yaml(resolved))
        datafiles.write_files(output_dir, files)
        train_set = tracking.log_dataset(run_id, x, y, name="train", context="training", source=data_source)
        test_set = tracking.log_dataset(run_id, x_test, y_test, name="test", context="evaluation",
                                        source=held_out_source)  # fmt: skip
        # A diverged run has no final model: its last parameters are the ones whose loss overflowed.
        # The held-out MSE is logged with the fit, so that a FINISHED run always holds its score: a
        # resumed sweep reads it back as the objective, and the model registry ranks versions by it.
        final = []
        if not diverged:
            # before the histories: MLflow copies every metric the run has at step 0 onto a new model
            # and reads all their histories to do it, which would cost as much as logging them
            model_id = tracking.log_model(model, w, b, x_example=x[:: max(1, len(x) // 5)][:5])
            test_mse = models.mse(model, x_test, y_test, w, b)
            held_out_scores = {"test_mse": test_mse, "test_r2": models.r2(model, x_test, y_test, w, b)}
            final = [*tracking.scores({"final_loss": final_loss, "final_w": w, "final_b": b}, model_id, train_set),
                     *tracking.scores(held_out_scores, model_id, test_set)]  # fmt: skip
        tracking.log_params_and_history(
            client,
            run_id,
            params={**flatten(resolved), **({"lr_bound": bound} if bound is not None else {})},
            history=tracking.curves(
                {"loss": history.loss, "log10_loss": plots.log10_loss(history.loss), "w": history.w, "b": history.b}
            ),
            steps=history.step,
            final=final,
        )
        tracking.log_files(client, run_id, files)  # what this run made, not what its folder holds now
        if diverged:
            client.set_tag(run_id, sweep.DIVERGED_TAG, "true")
            bad = np.flatnonzero(~np.isfinite(history.loss))
            step = history.step[bad[0]] if bad.size else len(history.step) and history.step[-1] + 1
            next_loss = math.inf if bad.size else final_loss
            raise TrainingDiverged(_divergence(step, history.loss, next_loss, config.lr, bound))
    return Result(run_id, experiment_id, loss=final_loss, w=w, b=b, test_mse=test_mse)


def check_data(model, x: np.ndarray, y: np.ndarray) -> float | None:
    """The model's stability bound on the training data, once the data is known to have a unique
    optimum and a finite bound where the model states them (the held-out evaluation needs both)."""
    try:
        bound = models.lr_bound(model, x)
        models.optimum(model, x, y)
    except ValueError as e:
        raise DataFileError(f"the training data: {e}") from e
    return bound


LONG_RUN_SECONDS = 60
LARGE_HISTORY_BYTES = 1 << 30
STORE_BYTES_PER_POINT = 4 * 100  # four series (loss, log10_loss, w, b), ~100 bytes a row in the store


def _warn_if_long(seconds: float, points: int, every: int) -> None:
    """Say so before a run that will take minutes, or log a history of a gigabyte or more."""
    size = points * STORE_BYTES_PER_POINT
    if seconds < LONG_RUN_SECONDS and size < LARGE_HISTORY_BYTES:
        return
    every_k = every * math.ceil(size / (LARGE_HISTORY_BYTES / 10))
    advice = f"; log_every={every_k} would log about {size / every_k * every / 1e9:.2f} GB" if every_k > every else ""
    duration = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
    log.warning("this run is estimated to take %s and to log %d steps (about %.1f GB in MLflow)%s",
                duration, points, size / 1e9, advice)  # fmt: skip


# Arrays the size of x at the peak of a run: x, y, the noise, the model's temporaries, and two more
# (torch's ŷ and its gradient; the numpy backend's temporaries are block-sized, so it needs less).
PEAK_ARRAYS = 6
# A kept step of the history: torch's CPU loop keeps a tuple of Python numbers (184 bytes by tracemalloc), numpy's 32.
HISTORY_ROW_BYTES = 200


def _check_memory(n: int, kept: int) -> None:
    """Refuse, before drawing anything, a run whose arrays (n points) and history (`kept` steps) cannot
    fit in the memory that is free."""
    import psutil

    data, history = PEAK_ARRAYS * n * 8, HISTORY_ROW_BYTES * kept  # data drawn in float64 whatever the dtype
    available = psutil.virtual_memory().available
    if data + history <= available:
        return
    free = f"{available / 2**30:.1f} GiB is free"
    if data >= history:
        raise ConfigError(f"config key 'data.n': {n} points need about {data / 2**30:.1f} GiB, and {free}; lower it")
    raise ConfigError(
        f"config key 'steps': a history of {kept} kept steps needs about {history / 2**30:.1f} GiB, and {free}; "
        "raise log_every (every k-th step is kept) or lower steps"
    )


def _divergence(step: int, loss: np.ndarray, next_loss: float, lr: float, bound: float | None) -> str:
    """What stopped a diverging run, for its `error` tag and the console."""
    if step == 0 and not math.isfinite(next_loss):  # before any step: no lr is to blame
        return (
            "the loss is not finite at the start (step 0): the data or the initial w, b are too large for the "
            "dtype, so 0.5·Σ(ŷ − y)² overflows; scale the data down (data.true_w, data.true_b, data.noise)"
        )
    if not math.isfinite(next_loss):
        what = f"the loss became non-finite at step {step}"
    else:
        what = f"the loss rose at step {step}, from {loss[-1]:.6g} to {next_loss:.6g}"
    stable = f"is stable only for lr < {bound:.6g}" if bound is not None else "needs a smaller step"
    return f"{what} with lr={lr:g}; gradient descent on this data {stable}; lower lr"


def _progress_bar(steps: Iterable[int]) -> Iterable[int]:
    """A progress bar over the steps, on a terminal only, and only once training has taken 2 s."""
    if not sys.stderr.isatty():
        return steps
    from tqdm import tqdm  # only a terminal needs it

    return tqdm(steps, delay=2, unit="step", leave=False, dynamic_ncols=True)


def _run_files(model, x: np.ndarray, y: np.ndarray, history: History, w: float, b: float, config_yaml: str) -> dict:
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
    in_sweep = hydra_config.mode == RunMode.MULTIRUN
    hidden = frozenset(values_from_environment(hydra_config))
    if not in_sweep:
        with clean_exit():
            try:
                return _train_once(cfg, output_dir, hidden=hidden)
            except UserError:
                _discard_run_folder(output_dir)  # a run that never started leaves no folder behind
                raise
    sweep.watch_the_sweep()
    try:
        with clean_exit():
            name = _sweep_job_name(hydra_config.overrides.task)
            return _run_job(cfg, output_dir, hydra_config.job.num, name, hidden)
    finally:
        sweep.leave_if_the_sweep_is_gone()


def _run_job(cfg: DictConfig, output_dir: Path, number: int, name: str, hidden: frozenset[str]) -> float:
    """One job of a sweep. A job that cannot run or diverges scores inf, and the sweep goes on."""
    errors.stop_if_interrupted()  # a sweep's next job does not start after a lost Ctrl-C
    try:
        return _train_once(cfg, output_dir, job=(number, name), hidden=hidden)
    except UserError as e:
        _discard_run_folder(output_dir)  # a run that never started leaves no folder behind
        if isinstance(e, TrainingDiverged):
            log.error("%s", e)  # one diverging job must not end the sweep; it scores infinitely badly
        else:  # nor one that cannot run: it is reported, numbered as Hydra numbers it, and the sweep ends FAILED
            log.error("#%d %s: error: %s", number, name, e)
            sweep.record_failed_job(name, number, str(e))
        return math.inf
    except KeyboardInterrupt:
        if not tracking.slurm_job():
            raise
        # `scancel` of one Slurm job: its run is KILLED; the sweep waits for the others and counts it.
        log.error("Slurm job %s cancelled (SIGTERM); its MLflow run is KILLED", tracking.slurm_job())
        return math.inf


# The `output_dir` tag of a run whose folder's path holds a value read from the environment.
HIDDEN_FOLDER = "hidden: its path holds a value read from the environment"


def _train_once(
    cfg: DictConfig, output_dir: Path, job: tuple[int, str] | None = None, hidden: frozenset[str] = frozenset()
) -> float:
    """Check `cfg`, draw its data and train; `job` is (number, run name) inside a sweep; `hidden`, the
    values Hydra's settings read from the environment, which nothing the run records may hold."""
    config = load_config(cfg)
    refuse_values_from(cfg, hidden)
    _check_memory(config.data.n, kept_steps(config.steps, config.log_every))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    data = make_problem(config)
    tags, name = {}, None
    if holds(str(output_dir.resolve()), hidden):
        tags["output_dir"] = HIDDEN_FOLDER
    if job is not None:
        number, name = job
        key = sweep.job_key(resolved, tracking.code_version(), data.x, data.y)
        if earlier := sweep.earlier_result(key, sweep.OBJECTIVE_METRIC[config.objective.value]):
            log.info("#%d %s: done before the sweep stopped, in run %s; not run again", number, name, earlier[0])
            return earlier[1]
        tags |= {"sweep_job": str(number), sweep.JOB_KEY_TAG: key}
    result = train(config, resolved, data, output_dir, tags, name)
    log_summary(result, config.experiment_name, browse_hint=job is None)
    return result.test_mse if config.objective is Objective.test_mse else result.loss


def _discard_run_folder(folder: Path) -> None:
    """Remove the output folder Hydra made for a run that never started (its config was refused, say),
    if it holds nothing but Hydra's own .hydra/ and an empty log; then its parents, while empty."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    if any(f.parent.name != ".hydra" and f.stat().st_size > 0 for f in files):
        return
    root = logging.getLogger()
    for handler in list(root.handlers):  # detached, not just closed: a closed FileHandler reopens to write
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == Path.cwd() or not parent.is_relative_to(Path.cwd()):
            break
        try:
            parent.rmdir()
        except OSError:  # not empty: another run's folder is in it
            break


def _sweep_job_name(overrides: list[str]) -> str:
    """A sweep job's run name, what varies and nothing else: 'lr=0.005 torch' fits the runs table's
    column even indented under its parent. (Its number is its `sweep_job` tag; the console says '#3'.)"""
    return " ".join(o.split("=", 1)[1] if o.startswith(("backend=", "model=")) else o for o in overrides)


def log_summary(result: Result, experiment_name: str, browse_hint: bool = True) -> None:
    uri = tracking.tracking_uri()
    log.info("final loss %.6g  w %.6f  b %.6f", result.loss, result.w, result.b)
    log.info("MLflow run %s in experiment '%s' at %s", result.run_id, experiment_name, uri)
    log.info("run page: %s", tracking.run_link(result.run_id, result.experiment_id))
    if browse_hint:
        log.info("%s", tracking.browse_hint())


def check_command_line(argv: list[str]) -> None:
    """Refuse, before Hydra starts, the overrides it would refuse in several lines or with advice that
    fails: unknown keys and group options, and `+` on a preset. Skipped for another primary config."""
    if any(arg.startswith(("-cn", "-cd", "-cp", "--config")) for arg in argv):
        return
    refuse_plus_on_presets(argv)
    overrides = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    usage.check_overrides(overrides)
    tracking.check_uri(tracking.tracking_uri())
    given = dict(override.split("=", 1) for override in overrides)
    folder_key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(argv) or "search" in given else "hydra.run.dir"
    folder = given.get(folder_key, "outputs" if folder_key == "hydra.run.dir" else "multirun")  # Hydra's, in cwd
    if "${" not in folder:  # an interpolation is resolved by Hydra
        run_folders.check_can_make(Path(folder).absolute(), folder_key)
    trials = given.get("hydra.sweeper.n_trials", "1")
    if trials.lstrip("-").isdigit() and int(trials) < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={trials}: a search needs at least 1 trial")
    sweeper = usage.preset("search", given.get("search", "null")).get("hydra", {}).get("sweeper", {})
    if "storage" in sweeper:  # an Optuna search, which keeps its study in a database
        storage = given.get("hydra.sweeper.storage", sweeper.storage) or "null"
        if "${" not in storage:
            sweep.check_study_storage(sweep.study_storage() if storage == "null" else storage)


def refuse_plus_on_presets(overrides: list[str]) -> None:
    """`+experiment=x` fails inside Hydra with a message about 'override'; say what to type instead."""
    for override in overrides:
        group = override.lstrip("+").split("=", 1)[0]
        if override.startswith("+") and group in ("experiment", "search"):
            raise ConfigError(
                f"'{override}': {group} is in conf/config.yaml's defaults list (as null), "
                f"so choose it without the '+': {override.lstrip('+')}"
            )


if __name__ == "__main__":
    with clean_exit():  # in a multirun, this process launches the jobs: an interrupt stops them all (src.sweep)
        check_command_line(sys.argv[1:])
        main()
