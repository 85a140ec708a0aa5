"""`make ui`: `mlflow ui` on the store runs are logged to, sized for one user.

The store is the one `python -m src.train` uses: MLFLOW_TRACKING_URI when it names a database,
else the project's own `mlflow.db` (`--store URI` picks another). A tracking server
(`http://...`) has its own UI: this says so and points at it.

Plain `mlflow ui` starts four uvicorn workers and MLflow's job-execution consumers, which
this project never uses; on a small machine that is a long wait and gigabytes of memory.
This starts one worker and no job consumers, prints the link to the runs table once the
server answers, and stops the server when it is stopped (Ctrl-C), in one line. The console
stays quiet: no access log, and none of MLflow's start-up notes that a user cannot act on
(one advises `--host 0.0.0.0`, which exposes the store to the network; this serves 127.0.0.1).
Warnings and errors from the server still show.
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from omegaconf import OmegaConf

from src import errors, stores
from src.errors import UserError, clean_exit

ROOT = Path(__file__).resolve().parent.parent
QUIET = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job consumers
    "PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated",  # MLflow's own import, every start
}
# What `mlflow ui` prints as it starts that is not a problem: dropped from the console.
START_UP_NOTES = ("[MLflow] Security middleware enabled with default settings",)


def command(store: str, port: int) -> list[str]:
    """The `mlflow ui` command line: this store, on 127.0.0.1 only, one worker."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [
        str(mlflow),
        "ui",
        "--backend-store-uri",
        store,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--registry-store-uri",  # the same store; unset, MLflow says so on every start
        store,
        "--uvicorn-opts",
        "--no-access-log --log-level warning",
    ]


def default_store() -> str:
    """The store `python -m src.train` logs to, as a backend store URI for `mlflow ui`."""
    uri = stores.tracking_uri()
    if stores.is_server(uri):
        raise UserError(f"MLFLOW_TRACKING_URI is the tracking server {uri}, which serves its own UI: open {uri} "
                        "(or pass --store URI to browse a database here)")  # fmt: skip
    return uri


def wait_until_answering(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    """Return once `url`/health answers; raise UserError if the server exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(
                f"mlflow ui exited with status {server.returncode} (is the port taken? try: make ui PORT=5001)"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise UserError(f"mlflow ui did not answer at {url} within {timeout:.0f} s")


def runs_table_link(url: str, experiment_name: str) -> str:
    """The runs table of `experiment_name` (where `mlflow ui` does not open by itself), or the experiments list."""
    query = urllib.parse.urlencode({"experiment_name": experiment_name})
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as answer:
            experiment_id = json.load(answer)["experiment"]["experiment_id"]
    except urllib.error.HTTPError:  # no run recorded yet
        return f"{url}/#/experiments"
    return f"{url}/#/experiments/{experiment_id}/runs"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--store", help="the backend store URI (default: where runs are logged; see above)")
    args = parser.parse_args(argv)
    experiment_name = OmegaConf.load(ROOT / "conf" / "config.yaml").experiment_name
    with clean_exit():
        store = args.store or default_store()
        # In a session of its own, so that a Ctrl-C reaches this process alone, which stops the
        # server (MLflow's CLI and its uvicorn worker) quietly with SIGTERM, instead of both
        # printing KeyboardInterrupt tracebacks.
        server = subprocess.Popen(command(store, args.port), env={**os.environ, **QUIET}, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)  # fmt: skip
        threading.Thread(target=_show_problems, args=(server.stderr,), daemon=True).start()
        try:
            url = f"http://127.0.0.1:{args.port}"
            wait_until_answering(url, server)
            print(f"MLflow UI: {runs_table_link(url, experiment_name)}   (Ctrl-C stops it)", flush=True)
            server.wait()
        except KeyboardInterrupt:
            errors.unwinding()
            print("stopped mlflow ui", flush=True)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)


def _show_problems(stream) -> None:
    """Pass the server's stderr on to ours, less its start-up notes."""
    for line in stream:
        if not line.startswith(START_UP_NOTES):
            sys.stderr.write(line)


if __name__ == "__main__":
    main()
