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
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src import errors, plots, tracking

PARENT_RUN_ENV = "SWEEP_PARENT_RUN_ID"
TABLE_COLUMNS = ("job", "backend", "lr", "seed", "status", "final_loss", "objective", "run_id")
# The metric each `objective` setting returns to the sweeper, by which the sweep ranks its jobs.
OBJECTIVE_METRIC = {"train_loss": "final_loss", "test_mse": "test_mse"}

log = logging.getLogger(__name__)


def sweep_parent() -> str | None:
    """The id of the sweep's parent run, inside a sweep's job; else None."""
    return os.environ.get(PARENT_RUN_ENV) or None


def summarize(rows: list[Mapping]) -> dict:
    """The best finished job (lowest objective) and the counts, from the jobs' table rows."""
    finished = [r for r in rows if r["status"] == "FINISHED" and math.isfinite(r["objective"])]
    best = min(finished, key=lambda r: r["objective"], default=None)
    return {"jobs": len(rows), "finished": len(finished), "best": best}


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
    def __init__(self) -> None:
        self._client = None
        self._parent: str | None = None
        self._experiment_name = ""
        self._slurm_jobs: Path | None = None  # submitit's folder of this sweep's Slurm jobs, on Slurm

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _optuna_logs_through_hydra(config)
        client, experiment_id = tracking.open_experiment(tracking.tracking_uri(), config.experiment_name)
        self._experiment_name = config.experiment_name
        name = f"sweep {time.strftime('%H:%M:%S')}"  # the date is in the Created column beside it
        tags = tracking.standard_tags({**tracking.run_tags("sweep", "-"), "sweep": "true"})
        self._client, self._parent = client, client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        os.environ[PARENT_RUN_ENV] = self._parent
        if "SlurmLauncher" in str(config.hydra.launcher.get("_target_", "")):  # submitit names job folders by id
            self._slurm_jobs = Path(config.hydra.sweep.dir) / ".submitit"
        atexit.register(self._abandon)  # runs only if the sweep never reaches on_multirun_end
        log.info("sweep parent MLflow run %s (%s)", self._parent, name)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._close("FINISHED", OBJECTIVE_METRIC[config.objective])

    def _abandon(self) -> None:
        """End a sweep that stopped before its end: on an interrupt (SIGINT, SIGTERM) as KILLED, else FAILED.

        Jobs still running in worker processes (joblib, submitit_local) are stopped with SIGTERM,
        which ends each one's run KILLED; a worker its launcher already killed outright left its
        run RUNNING, and `close_stale_runs` ends it.
        """
        if self._parent is None:
            return
        _stop(psutil.Process().children(recursive=True))
        if self._slurm_jobs is not None:
            _cancel_slurm_jobs(self._slurm_jobs)
        experiment_id = self._client.get_run(self._parent).info.experiment_id
        tracking.close_stale_runs(self._client, experiment_id)
        self._close("KILLED" if errors.interrupted_by else "FAILED")

    def _close(self, status: str, objective_metric: str = "final_loss") -> None:
        if self._parent is None:
            return
        parent, self._parent = self._parent, None
        os.environ.pop(PARENT_RUN_ENV, None)
        try:
            rows = self._children(parent, objective_metric)
            summary = summarize(rows)
            self._log_summary(parent, rows, summary, objective_metric)
            if summary["best"]:
                summary["version"] = tracking.register_model(summary["best"]["run_id"], self._experiment_name)
            if status == "FINISHED" and summary["finished"] == 0:
                status = "FAILED"
        finally:
            self._client.set_terminated(parent, status)
        best = summary["best"]
        if best:
            log.info("sweep: %d/%d jobs finished; best: job %s, backend %s, lr %s, %s %.6g",
                     summary["finished"], summary["jobs"], best["job"], best["backend"], best["lr"],
                     objective_metric, best["objective"])  # fmt: skip
            log.info("best model: models:/%s@best (version %s)", self._experiment_name, summary["version"])
        experiment_id = self._client.get_run(parent).info.experiment_id
        log.info("sweep page: %s  (summary: sweep_summary.md and final_loss_vs_lr.png in its artifacts)",
                 tracking.run_link(parent, experiment_id))  # fmt: skip
        log.info("%s", tracking.browse_hint())

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
                "final_loss": run.data.metrics.get("final_loss", math.nan),
                "objective": run.data.metrics.get(objective_metric, math.nan),
                "run_id": run.info.run_id,
            }
            for run in runs
        ]
        return sorted(rows, key=lambda r: r["job"])

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
        tracking.log_params_and_history(client, parent, params={}, history={}, final=metrics)
        client.log_text(parent, _markdown_table(rows), "sweep_summary.md")
        figure = plots.plot_sweep(rows, objective_metric, best)
        client.log_figure(parent, figure, "final_loss_vs_lr.png")
        plots.close(figure)
