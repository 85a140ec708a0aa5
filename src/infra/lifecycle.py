"""A run's lifecycle: started with its signals held, ended FINISHED, FAILED or KILLED whatever stops
it, watched for a server that stops answering, and, by the next run, ended when its owner is gone."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from src import datafiles, errors
from src.infra.store_access import STORE_ERRORS, _api_symptom, shown
from src.stores import is_server, tracking_uri

log = logging.getLogger(__name__)


# A tracking server that turns sick mid-run (its API stuck, failing, or on a locked database) would hold
# the run in MLflow's retries for minutes. While a run is open, `watch_server` asks the server about it
# every SERVER_PROBE_SECONDS; once every answer for SERVER_SICK_SECONDS has been a failure, the run stops
# with one line, well within 30 s of the first failure. A server that refuses connections is down,
# perhaps for a restart, which MLflow's retries outlast: that is left to them.
SERVER_PROBE_SECONDS = 2.0


SERVER_PROBE_TIMEOUT = 5.0


SERVER_SICK_SECONDS = 10.0


# What the first watch to find the server sick saw; `_raise_server_stopped` raises it in the main thread.
# The lock makes a watch's firing and its end (or another watch's firing) one after the other.
_server_trouble: list[str] = []


_server_trouble_lock = threading.Lock()


def _raise_server_stopped(signum, frame):  # noqa: ARG001
    raise errors.ServerStoppedAnswering(_server_trouble[0])


def watch_server(run_id: str) -> Callable[[], None]:
    """Against a tracking server, watch it from a thread while run `run_id` is open; return what ends
    the watch. When the server is found sick, MLflow's later requests in this process are made once,
    each bounded by SERVER_PROBE_TIMEOUT (so that ending the run cannot hang in turn), and
    errors.ServerStoppedAnswering is raised in the main thread, through SIGALRM, which also ends a
    request of its stuck in a socket. (A sweep's parent and a job of the basic launcher, in the same
    process, each have a watch; either one may find the server sick first.)"""
    uri = mlflow.get_tracking_uri()
    if not is_server(uri) or threading.current_thread() is not threading.main_thread():
        return lambda: None
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/runs/get?{urllib.parse.urlencode({'run_id': run_id})}"
    stop = threading.Event()

    def watch() -> None:
        failing_since = None
        while not stop.wait(SERVER_PROBE_SECONDS):
            asked = time.monotonic()
            try:
                symptom = _api_symptom(url, SERVER_PROBE_TIMEOUT)
            except ConnectionError:
                symptom = None  # down, not sick
            if symptom is None:
                failing_since = None
                continue
            failing_since = failing_since or asked
            if time.monotonic() - failing_since >= SERVER_SICK_SECONDS:
                break
        with _server_trouble_lock:
            if stop.is_set() or _server_trouble:
                return
            _server_trouble.append(
                f"the MLflow tracking server at {shown(uri)} stopped answering mid-run: {symptom}, for "
                f"{time.monotonic() - failing_since:.0f} s; it, or the database behind it, is stuck or failing: "
                "look at the server's log and restart it"
            )
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = f"{SERVER_PROBE_TIMEOUT:.0f}"
            signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, _raise_server_stopped)
    threading.Thread(target=watch, name=f"server-watch-{run_id}", daemon=True).start()

    def unwatch() -> None:
        with _server_trouble_lock:
            stop.set()
        signal.signal(signal.SIGALRM, previous)

    return unwatch


# System metrics (CPU, memory) cost a sampler thread: worth it only when it records a handful of points.
SYSTEM_METRICS_MIN_SECONDS = 5.0


SYSTEM_METRICS_POINTS = 10


@contextmanager
def tracked_run(
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
    expected_seconds: float = 0.0,
) -> Iterator[str]:
    """Start an MLflow run (nested under `parent_run_id` when given) and yield its id.

    MLflow's own `start_run` adds its source, user and git tags. A run expected to take
    `SYSTEM_METRICS_MIN_SECONDS` or more also logs system metrics, sampled often enough for
    about `SYSTEM_METRICS_POINTS` points. The run ends FINISHED, KILLED on an interrupt, else
    FAILED with the error in its `error` tag.
    """
    # Against a tracking server, MLflow prints "View run ... at: <url>" to stdout as each run ends;
    # every run here logs its own link once (src.train.log_summary), so MLflow's copy is noise.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Logging the model copies its files with a "Downloading artifacts" progress bar, every run: noise too.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    system_metrics = expected_seconds >= SYSTEM_METRICS_MIN_SECONDS
    if system_metrics:
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # "Started monitoring ...": noise
        mlflow.set_system_metrics_sampling_interval(max(1.0, expected_seconds / SYSTEM_METRICS_POINTS))
        mlflow.set_system_metrics_samples_before_logging(1)
    # A Ctrl-C or SIGTERM while start_run is still at work, after it has created the run, would
    # leave the run RUNNING: such a signal is held until the `try` below can end the run KILLED.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            tags=dict(tags),
            parent_run_id=parent_run_id,
            log_system_metrics=system_metrics,
        )
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    status, server_stopped = RunStatus.FAILED, None
    beating, unwatch = heartbeat(run.info.run_id), watch_server(run.info.run_id)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal held above is handled here
        yield run.info.run_id
        errors.stop_if_interrupted()
        status = RunStatus.FINISHED
    except KeyboardInterrupt:
        errors.unwinding()
        status = RunStatus.KILLED
        raise
    except errors.ServerStoppedAnswering as e:
        server_stopped = e
        raise
    except Exception as e:
        try:
            mlflow.set_tag("error", str(e)[:5000])  # shown on the run's page in `mlflow ui`
        except STORE_ERRORS:
            pass  # the store itself failed: the error that reaches the console says how
        raise
    finally:
        beating.set()
        if server_stopped is None:
            _end_run(RunStatus.to_string(status))
        else:  # one try, bounded (see watch_server)
            try:
                mlflow.end_run(RunStatus.to_string(status))
            except STORE_ERRORS:
                told = f"it was not told that run {run.info.run_id} ended"
                server_stopped.args = (f"{server_stopped}; {told}: if it stays RUNNING there, the next run in its "
                                       "experiment ends it KILLED",)  # fmt: skip
        unwatch()


# A RUNNING run's owner on another host, outside Slurm, cannot be asked whether it is alive: it
# tags the run with the time every HEARTBEAT_SECONDS instead, and `close_stale_runs` ends a run
# that has given no sign of life (heartbeat, or its start) for SILENT_AFTER_SECONDS.
HEARTBEAT_TAG = "owner.heartbeat"


HEARTBEAT_SECONDS = 60.0


SILENT_AFTER_SECONDS = 15 * 60


def heartbeat(run_id: str) -> threading.Event:
    """Tag run `run_id` with the time (HEARTBEAT_TAG) every HEARTBEAT_SECONDS, from a thread of its own,
    until the returned event is set."""
    stop, client = threading.Event(), MlflowClient(tracking_uri())

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
            except STORE_ERRORS:
                pass  # a store that fails fails the run's own writes too, which say so

    threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True).start()
    return stop


# Each write to a locked SQLite store waits up to 20 s (the busy timeout MLflow sets). A run
# whose logging failed that way still has to be ended: that is retried for up to this long.
END_RUN_RETRY_SECONDS = 60


def _end_run(status: str) -> None:
    """End the active run with `status`, retrying while the store is locked; past the deadline the
    run stays RUNNING until the next run ends it (see `close_stale_runs`)."""
    deadline = time.monotonic() + END_RUN_RETRY_SECONDS
    while True:
        try:
            mlflow.end_run(status)
            return
        except STORE_ERRORS as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def owner_tags() -> dict[str, str]:
    """Who runs this: host, PID and the process's start time (a PID alone can be reused), and
    the Slurm job, if any. `close_stale_runs` reads them to tell a live run from an orphan."""
    import psutil

    me = psutil.Process()
    tags = {"owner.host": socket.gethostname(), "owner.pid": str(me.pid), "owner.started": f"{me.create_time():.3f}"}
    if job := slurm_job():
        tags["owner.slurm_job"] = job
    return tags


def slurm_job() -> str | None:
    """This process's Slurm job as squeue shows it and scancel takes it: `<array job>_<task>` for a
    task of an array (scancel refuses a task's own SLURM_JOB_ID), else SLURM_JOB_ID; None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def close_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """End, as KILLED, every RUNNING run in the experiment whose owner is gone; return their ids.

    A run is only left RUNNING by a process that died without unwinding: SIGKILL, the OOM
    killer, a lost node. How its owner is judged:
    - on this host: gone when no process has its PID and start time;
    - on another host, as a Slurm job (`owner.slurm_job`): gone when Slurm no longer lists the job;
    - on another host otherwise (a container, another machine): gone after SILENT_AFTER_SECONDS
      with no heartbeat (HEARTBEAT_TAG, or its start when it has none), by this host's clock;
    - with no owner tags (an older run): never touched.
    The `error` tag says how the end was found, and the run's leftover temporary files
    (in its `output_dir`) are removed.
    """
    stale = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        reason = _owner_gone(run.data.tags)
        if reason is None:
            continue
        client.set_tag(
            run.info.run_id, "error", f"left RUNNING: {reason}; ended by a later run on {socket.gethostname()}"
        )
        client.set_terminated(run.info.run_id, "KILLED")
        if Path(run.data.tags.get("output_dir", "")).is_absolute():  # not hidden (src.train.HIDDEN_FOLDER)
            datafiles.remove_partial_files(Path(run.data.tags["output_dir"]))
        stale.append(run.info.run_id)
    if stale:
        log.warning(
            "ended %d MLflow run(s) left RUNNING by a process that is gone, as KILLED: %s",
            len(stale),
            ", ".join(stale),
        )
    return stale


def _owner_gone(tags: Mapping[str, str]) -> str | None:
    """Why a RUNNING run's owner is known to be gone, or None when it may be alive."""
    import psutil

    host, pid, started = tags.get("owner.host"), tags.get("owner.pid"), tags.get("owner.started")
    if not (host and pid and started):
        return None
    if host == socket.gethostname():
        try:
            alive = abs(psutil.Process(int(pid)).create_time() - float(started)) < 0.01
        except (psutil.NoSuchProcess, ValueError):
            alive = False
        return None if alive else f"its process {pid} on {host} is gone"
    job = tags.get("owner.slurm_job")
    if job:
        return f"its Slurm job {job} on {host} has ended" if _slurm_job_ended(job) else None
    try:
        last_sign = max(float(started), float(tags.get(HEARTBEAT_TAG, 0)))
    except ValueError:
        return None
    silent = time.time() - last_sign
    if silent > SILENT_AFTER_SECONDS:
        return f"no heartbeat from its process {pid} on {host} for {silent / 60:.0f} min"
    return None


def _slurm_job_ended(job: str) -> bool:
    try:
        done = subprocess.run(["squeue", "--noheader", "--jobs", job], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False  # no Slurm here to ask: assume alive
    return done.returncode == 0 and not done.stdout.strip() or "Invalid job id" in done.stderr
