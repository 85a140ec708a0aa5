"""Hydra multirun -> one parent MLflow run, with every job's run nested under it.

`MlflowSweepCallback` is listed under `hydra.callbacks` in conf/config.yaml, so it is active
for every launcher. When a sweep starts it opens the store (creating a fresh database once,
before any job can race for it) and a parent run, and hands the parent's id to the jobs
through the environment, which every launcher passes on to its workers. Each job starts its
run with `mlflow.start_run(parent_run_id=...)`, which is how `mlflow ui` nests runs. When the
sweep ends the parent gets a summary: the best job, a table of final losses, and final loss
against lr for each backend; the best job's model is registered under the experiment's name
with the alias `best`. A sweep stopped by Ctrl-C or SIGTERM stops its jobs and closes its
parent run as KILLED; one that dies otherwise closes it as FAILED.

Re-running the command of a sweep that did not end FINISHED resumes it (see `resumable_parent`):
the parent is reopened, and a job that an earlier attempt finished (or saw diverge), with the same
config, code and data (`job_key`), is not run again: it hands the sweeper the objective its run recorded.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import psutil
from hydra.experimental.callback import Callback
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from src import datafiles, errors, plots, record, registry, run_folders, stores
from src.errors import TrainingDiverged, UserError
from src.infra import lifecycle, provenance, store_access

PARENT_RUN_ENV = "SWEEP_PARENT_RUN_ID"
SWEEP_PID_ENV, SWEEP_HOST_ENV = "SWEEP_PID", "SWEEP_HOST"  # the sweep's own process, which launches the jobs
RESUMED_AT_ENV = "SWEEP_RESUMED_AT"  # set in a resumed sweep: when this attempt began, in ms since the epoch
SWEEP_KEY_TAG = "sweep_key"
JOB_KEY_TAG = "sweep_job_key"
TABLE_COLUMNS = ("job", "backend", "lr", "seed", "status", "final_loss", "objective", "run_id")
# The metric each `objective` setting returns to the sweeper, by which the sweep ranks its jobs.
OBJECTIVE_METRIC = {"train_loss": "final_loss", "test_mse": "test_mse"}

log = logging.getLogger(__name__)


_watching: list[psutil.Process] = []  # the sweep's process, once a job in this worker has started to watch it


def watch_the_sweep() -> None:
    """In a job that runs outside the sweep's own process, on its machine (a joblib or submitit local
    worker): when the sweep's process dies, even by SIGKILL, this process gets SIGTERM, which ends
    the job's run KILLED; `leave_if_the_sweep_is_gone` then ends the worker. No worker trains on, or
    logs its job under a parent run that nobody will close. (The basic launcher runs jobs in the
    sweep's own process; on Slurm the sweep's process is on another machine, and `scancel` stops jobs.)"""
    pid, host = os.environ.get(SWEEP_PID_ENV, ""), os.environ.get(SWEEP_HOST_ENV)
    if _watching or not pid or int(pid) == os.getpid() or host != socket.gethostname():
        return
    try:
        sweep = psutil.Process(int(pid))
    except psutil.NoSuchProcess:
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _watching.append(sweep)

    def watch() -> None:
        while sweep.is_running():  # its PID and start time: a reused PID is not the sweep
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-the-sweep", daemon=True).start()


def leave_if_the_sweep_is_gone() -> None:
    """End this worker process, once its job has ended, if the sweep that started it is gone: a pool's
    worker would otherwise wait on for jobs that will never come."""
    if _watching and not _watching[0].is_running():
        logging.shutdown()
        os._exit(130)


def sweep_parent() -> str | None:
    """The id of the sweep's parent run, inside a sweep's job; else None."""
    return os.environ.get(PARENT_RUN_ENV) or None


def sweep_key(task_overrides: list[str], sweeper: Mapping, code: str) -> str:
    """What decides a multirun's jobs: its command line's overrides (sweeps included), its sweeper's
    settings (an Optuna search's space, seed and n_trials) and the code. The launcher is not in it."""
    return _digest([list(task_overrides), dict(sweeper), code])


def job_key(config: Mapping, code: str, x: np.ndarray, y: np.ndarray) -> str:
    """What decides a job's result: its resolved config, the code, and the training data's bytes."""
    return _digest([dict(config), code, datafiles.digest(x, y)])


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def sweep_params(task_overrides: list[str], sweeper: Mapping, choices: Mapping) -> dict[str, str]:
    """What a sweep's parent run shows as its params: each swept key with its values or range
    (`swept.lr`: `0.001,0.01`, from the command line or from the sweeper's `params`, Optuna's
    search space), each fixed override (`fixed.steps`: `200`), the launcher and the sweeper
    (with Optuna's `n_trials`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = {f"swept.{key}": str(value) for key, value in (sweeper.get("params") or {}).items()}
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        kind = "swept" if override.is_sweep_override() else "fixed"
        params[f"{kind}.{override.key_or_group}"] = override.get_value_string()
    params |= {"launcher": str(choices.get("hydra/launcher")), "sweeper": str(choices.get("hydra/sweeper"))}
    if "n_trials" in sweeper:
        params["sweeper.n_trials"] = str(sweeper["n_trials"])
    return params


def resumable_parent(client: MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The parent run of the newest sweep keyed `key`, if that sweep ended KILLED or FAILED: the one to resume.

    A sweep that FINISHED is not resumed (running its command again starts a new sweep), nor one
    that is still RUNNING (another process is at it; a dead one's was ended KILLED on opening the store).
    """
    newest = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{SWEEP_KEY_TAG} = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return newest[0] if newest and newest[0].info.status in ("KILLED", "FAILED") else None


def earlier_result(key: str, objective_metric: str) -> tuple[str, float] | None:
    """Inside a resumed sweep's job: (run id, objective) of the run of job `key` that an earlier attempt
    at the sweep finished, or None (a fresh sweep, or a job still to run). A run that diverged counts
    as done, with the objective it scored, inf: running it again would only diverge again."""
    parent, resumed_at = sweep_parent(), os.environ.get(RESUMED_AT_ENV)
    if not (parent and resumed_at):
        return None
    with store_access.store_errors(stores.tracking_uri()):
        client = record.current_client()
        runs = client.search_runs(
            [client.get_run(parent).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}' AND tags.{JOB_KEY_TAG} = '{key}' "
            f"AND attributes.start_time < {int(resumed_at)}",
        )
    for run in runs:
        if run.info.status == "FINISHED" and objective_metric in run.data.metrics:
            return run.info.run_id, run.data.metrics[objective_metric]
        if run.info.status == "FAILED" and run.data.tags.get(record.DIVERGED_TAG) == "true":
            return run.info.run_id, math.inf
    return None


def study_storage() -> str:
    """Where an Optuna search keeps its study: optuna.db beside the MLflow SQLite store, else in the project root."""
    uri = stores.tracking_uri()
    folder = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else stores.project_root()
    return f"sqlite:///{folder / 'optuna.db'}"


def check_study_storage(url: str) -> None:
    """Refuse in one line, before a search makes a run or a folder, an SQLite file its Optuna study cannot
    be kept in: one that is not a database, one that cannot be written, or a new one in a folder that cannot."""
    db = store_access._sqlite_path(url)
    if db is None:
        return  # a database server: Optuna connects to it when the search starts
    fix = "point hydra.sweeper.storage at another file (sqlite:////absolute/path/optuna.db), or leave it null"
    if db.exists() and not db.is_file():
        raise errors.ConfigError(f"hydra.sweeper.storage={url}: {db} is {store_access._file_kind(db)}; {fix}")
    if db.exists() and db.stat().st_size > 0:
        with db.open("rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise errors.ConfigError(f"hydra.sweeper.storage={url}: {db} is not an SQLite database; {fix}")
    try:
        if db.exists():
            store_access._check_writable(db)
        else:
            tempfile.TemporaryFile(dir=db.parent).close()  # where Optuna will create it
    except (sqlite3.Error, OSError) as e:
        cause = e.strerror if isinstance(e, OSError) else e
        raise errors.ConfigError(f"hydra.sweeper.storage={url}: {db} cannot be written ({cause}); {fix}") from e


def one_row_per_job(rows: list[Mapping]) -> list[Mapping]:
    """A resumed sweep also holds the runs its earlier attempts left unfinished: keep each job's
    FINISHED run if it has one, else its latest; in job order."""
    kept = {}
    for row in sorted(rows, key=lambda r: (r["status"] == "FINISHED", r["start"])):
        kept[row["job"]] = row
    return sorted(kept.values(), key=lambda r: r["job"])


def summarize(rows: list[Mapping]) -> dict:
    """The best finished job (lowest objective) and the counts, from the jobs' table rows. A job that
    failed counts as `failed` unless it diverged, which is a result (it scores inf), not an error."""
    finished = [r for r in rows if r["status"] == "FINISHED" and math.isfinite(r["objective"])]
    failed = [r for r in rows if r["status"] == "FAILED" and not r.get("diverged")]
    best = min(finished, key=lambda r: r["objective"], default=None)
    return {"jobs": len(rows), "finished": len(finished), "failed": len(failed), "best": best}


def record_failed_job(name: str, number: int, error: str) -> None:
    """Inside a sweep's job that could not run (its config refused, say): a FAILED run under the sweep's
    parent, with the error in its `error` tag, so that the sweep's summary counts it and `mlflow ui` shows why."""
    parent = sweep_parent()
    if parent is None:
        return
    try:
        client = record.current_client()
        tags = {"mlflow.parentRunId": parent, "sweep_job": str(number), "error": error[:5000]}
        run = client.create_run(client.get_run(parent).info.experiment_id, run_name=name, tags=tags)
        client.set_terminated(run.info.run_id, "FAILED")
    except store_access.STORE_ERRORS:
        pass  # the store itself failed: the job's own line says so


def _summary_line(summary: dict, objective_metric: str) -> str:
    """The sweep's one line on the console: how many jobs finished, and the best of them."""
    done = f"sweep: {summary['finished']}/{summary['jobs']} jobs finished"
    if summary["failed"]:
        done += f", {summary['failed']} failed (see their lines above)"
    best = summary["best"]
    if best is None:
        return done
    return (f"{done}; best: job {best['job']}, backend {best['backend']}, lr {best['lr']}, "
            f"{objective_metric} {best['objective']:.6g}")  # fmt: skip


def _stop(processes: list, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds for any still alive (loky's resource tracker
    ignores SIGTERM; a job ends its run within a second)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def _cancel_slurm_jobs(folder: Path) -> None:
    """scancel the Slurm jobs whose folders submitit made in `folder` (named <job>_<task>): a sweep that
    stops must not leave jobs that go on to land under its closed parent."""
    jobs = sorted({path.name.split("_")[0] for path in folder.glob("*_*") if path.is_dir()})
    if jobs and shutil.which("scancel"):
        subprocess.run(["scancel", *jobs], capture_output=True, check=False)
        log.info("cancelled the sweep's Slurm jobs: %s", " ".join(jobs))


def _markdown_table(rows: list[Mapping]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + " --- |" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _optuna_logs_through_hydra(config: DictConfig) -> None:
    """Optuna logs through its own colour handler, which writes ANSI codes into files too; send its
    records to Hydra's handlers instead, so they look like every other line, on the console and in multirun.log."""
    if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
        import optuna.logging

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()


class MlflowSweepCallback(Callback):
    def __init__(self, resume: bool = True) -> None:
        self._resume = resume  # hydra.callbacks.mlflow_sweep.resume=false: always start a new sweep
        self._client = None
        self._parent: str | None = None
        self._beating: threading.Event | None = None  # set: the parent's heartbeat stops
        self._unwatch: Callable[[], None] = lambda: None  # ends lifecycle.watch_server's watch of the parent
        self._experiment_name = ""
        self._slurm_jobs: Path | None = None  # submitit's folder of this sweep's Slurm jobs, on Slurm

    def __getstate__(self) -> dict:
        """What a launcher pickles to its workers: all but the parent's heartbeat and watch, kept here."""
        return {**self.__dict__, "_beating": None, "_unwatch": None}

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _optuna_logs_through_hydra(config)
        client, experiment_id = store_access.open_experiment(stores.tracking_uri(), config.experiment_name)
        lifecycle.close_stale_runs(client, experiment_id)  # a killed sweep's parent ends KILLED, and can resume
        self._client, self._experiment_name = client, config.experiment_name
        sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
        key = sweep_key(list(config.hydra.overrides.task), sweeper, provenance.code_version())
        earlier = resumable_parent(client, experiment_id, key) if self._resume else None
        if earlier:
            self._parent = self._reopen(earlier)
        else:
            params = sweep_params(list(config.hydra.overrides.task), sweeper, config.hydra.runtime.choices)
            swept = [k.removeprefix("swept.") for k in params if k.startswith("swept.")]
            name = f"sweep {','.join(swept)}"  # what varies; when is in the Created column beside it
            tags = record.standard_tags({**provenance.provenance_tags(), "sweep": "true", SWEEP_KEY_TAG: key})
            self._parent = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            record.log_params_and_history(client, self._parent, params=params, history={}, final=[])
            log.info("sweep parent MLflow run %s (%s)", self._parent, name)
        self._beating, self._unwatch = lifecycle.heartbeat(self._parent), lifecycle.watch_server(self._parent)
        os.environ[PARENT_RUN_ENV] = self._parent
        os.environ[SWEEP_PID_ENV], os.environ[SWEEP_HOST_ENV] = str(os.getpid()), socket.gethostname()
        if "SlurmLauncher" in str(config.hydra.launcher.get("_target_", "")):  # submitit names job folders by id
            self._slurm_jobs = Path(config.hydra.sweep.dir) / ".submitit"
        atexit.register(self._abandon)  # runs only if the sweep never reaches on_multirun_end

    def _reopen(self, parent: Run) -> str:
        """Mark the parent RUNNING again, owned by this process, and tell the jobs that the sweep resumes."""
        run_id, client = parent.info.run_id, self._client
        done = [r for r in self._children(run_id, "final_loss") if r["status"] == "FINISHED"]
        os.environ[RESUMED_AT_ENV] = str(int(time.time() * 1000))
        client.update_run(run_id, status="RUNNING")
        for key, value in lifecycle.owner_tags().items():  # close_stale_runs judges the parent by its owner
            client.set_tag(run_id, key, value)
        log.info("resuming sweep parent MLflow run %s (%s), which ended %s with %d job(s) finished; jobs done "
                 "before are not run again (hydra.callbacks.mlflow_sweep.resume=false starts a new sweep)",
                 run_id, parent.info.run_name, parent.info.status, len(done))  # fmt: skip
        return run_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        errors.stop_if_interrupted()  # not FINISHED after a lost Ctrl-C: `_abandon` ends it KILLED
        if self._close("FINISHED", OBJECTIVE_METRIC[config.objective]) == "FAILED":
            raise SystemExit(1)  # each failed job has said why, and the summary line how many

    def _abandon(self) -> None:
        """End a sweep that stopped before its end: on an interrupt (SIGINT, SIGTERM) as KILLED, else FAILED.

        Jobs still running in worker processes (joblib, submitit local) are stopped with SIGTERM,
        which ends each one's run KILLED; a worker its launcher already killed outright left its
        run RUNNING, and `close_stale_runs` ends it.
        """
        if self._parent is None:
            return
        _stop(psutil.Process().children(recursive=True))
        if self._slurm_jobs is not None:
            _cancel_slurm_jobs(self._slurm_jobs)
        parent = self._parent
        try:
            experiment_id = self._client.get_run(parent).info.experiment_id
            lifecycle.close_stale_runs(self._client, experiment_id)
            self._close("KILLED" if errors.interrupted_by else "FAILED")
        except store_access.STORE_ERRORS as e:  # the store failed the sweep, and has said how: one line more
            log.error("could not end the sweep's parent run %s either (%s); the next run in its experiment ends "
                      "it KILLED", parent, type(e).__name__)  # fmt: skip

    def _close(self, status: str, objective_metric: str = "final_loss") -> str | None:
        """End the parent run with `status`, or FAILED when no job finished or any failed; return the status."""
        if self._parent is None:
            return None
        self._beating.set()
        parent, self._parent = self._parent, None
        os.environ.pop(PARENT_RUN_ENV, None)
        os.environ.pop(SWEEP_PID_ENV, None)
        os.environ.pop(SWEEP_HOST_ENV, None)
        os.environ.pop(RESUMED_AT_ENV, None)
        try:
            rows = self._children(parent, objective_metric)
            summary = summarize(rows)
            self._log_summary(parent, rows, summary, objective_metric)
            if status == "FINISHED" and (summary["finished"] == 0 or summary["failed"]):
                status = "FAILED"
            log.info("%s", _summary_line(summary, objective_metric))
            if summary["best"]:
                registry.register_model(summary["best"]["run_id"], self._experiment_name)
        finally:
            try:
                self._client.set_terminated(parent, status)
            finally:
                self._unwatch()
        experiment_id = self._client.get_run(parent).info.experiment_id
        log.info("sweep page: %s  (summary: sweep_summary.md and final_loss_vs_lr.png in its artifacts)",
                 record.run_link(parent, experiment_id))  # fmt: skip
        log.info("%s", record.browse_hint())
        return status

    def _children(self, parent: str, objective_metric: str) -> list[dict]:
        runs = self._client.search_runs(
            [self._client.get_run(parent).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
            max_results=10_000,
        )
        rows = [
            {
                "job": int(run.data.tags.get("sweep_job", -1)),
                "backend": run.data.params.get("backend.name", ""),
                "lr": float(run.data.params.get("lr", "nan")),
                "seed": run.data.params.get("seed", ""),
                "status": run.info.status,
                "diverged": run.data.tags.get(record.DIVERGED_TAG) == "true",
                "final_loss": run.data.metrics.get("final_loss", math.nan),
                "objective": run.data.metrics.get(objective_metric, math.nan),
                "run_id": run.info.run_id,
                "start": run.info.start_time,
            }
            for run in runs
        ]
        return one_row_per_job(rows)

    def _log_summary(self, parent: str, rows: list[dict], summary: dict, objective_metric: str) -> None:
        client = self._client
        metrics = {"jobs": summary["jobs"], "jobs_finished": summary["finished"]}
        best = summary["best"]
        if best:
            metrics |= {
                "best_objective": best["objective"],
                "best_final_loss": best["final_loss"],
                "best_lr": best["lr"],
            }
            client.set_tag(parent, "best_run_id", best["run_id"])
            client.set_tag(parent, "best_job", f"job {best['job']}: backend={best['backend']} lr={best['lr']}")
        record.log_params_and_history(client, parent, params={}, history={},
                                        final=record.scores(metrics))  # fmt: skip
        client.log_text(parent, _markdown_table(rows), "sweep_summary.md")
        figure = plots.plot_sweep(rows, objective_metric, best)
        client.log_figure(parent, figure, "final_loss_vs_lr.png")
        plots.close(figure)


def run_job(train_once: Callable[[], float], output_dir: Path, number: int, name: str) -> float:
    """One job of a sweep, `train_once()`: a job that cannot run or diverges scores inf, and the sweep goes on."""
    errors.stop_if_interrupted()  # a sweep's next job does not start after a lost Ctrl-C
    try:
        return train_once()
    except UserError as e:
        run_folders.discard(output_dir)  # a run that never started leaves no folder behind
        if isinstance(e, TrainingDiverged):
            log.error("%s", e)  # one diverging job must not end the sweep; it scores infinitely badly
        else:  # nor one that cannot run: it is reported, numbered as Hydra numbers it, and the sweep ends FAILED
            log.error("#%d %s: error: %s", number, name, e)
            record_failed_job(name, number, str(e))
        return math.inf
    except KeyboardInterrupt:
        if not lifecycle.slurm_job():
            raise
        # `scancel` of one Slurm job: its run is KILLED; the sweep waits for the others and counts it.
        log.error("Slurm job %s cancelled (SIGTERM); its MLflow run is KILLED", lifecycle.slurm_job())
        return math.inf


def job_tags_or_result(resolved: dict, x, y, objective: str, number: int, name: str) -> tuple[dict, float | None]:
    """A sweep job's tags (its number, and the key by which a resumed sweep finds it), and the objective
    of the run that already did this job before the sweep stopped, if one did (else None)."""
    key = job_key(resolved, provenance.code_version(), x, y)
    if earlier := earlier_result(key, OBJECTIVE_METRIC[objective]):
        log.info("#%d %s: done before the sweep stopped, in run %s; not run again", number, name, earlier[0])
        return {}, earlier[1]
    return {"sweep_job": str(number), JOB_KEY_TAG: key}, None


def job_name(overrides: list[str]) -> str:
    """A sweep job's run name, what varies and nothing else: 'lr=0.005 torch' fits the runs table's
    column even indented under its parent. (Its number is its `sweep_job` tag; the console says '#3'.)"""
    return " ".join(o.split("=", 1)[1] if o.startswith(("backend=", "model=")) else o for o in overrides)
