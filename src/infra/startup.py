"""What an entry point does first, before its heavy imports: `python -m src.<entry point>` runs
`startup.begin()` at the top of its module, under `if __name__ == "__main__":`."""

import gc
import os
import signal
import sys


def _end_quietly_while_starting(signum, frame):  # noqa: ARG001
    sys.stderr.write(f"interrupted ({signal.Signals(signum).name}) while starting; nothing was run\n")
    os._exit(130)


def begin() -> None:
    """Three things, before MLflow, pandas, SQLAlchemy, Hydra and matplotlib are imported:

    - MLflow's usage telemetry (a lookup of config.mlflow-telemetry.io, then reports), which it
      decides on as it is imported, is off unless the user turned it on (MLFLOW_DISABLE_TELEMETRY=false);
    - Ctrl-C or SIGTERM during the imports ends the process with one line, not a traceback, until
      the entry point installs its own handlers (src.errors.clean_exit);
    - the cycle collector is off until then too: the imports make millions of objects and no garbage,
      and the collector's repeated full passes over them cost about a second of every run.
      `clean_exit`, which every entry point enters, freezes what was imported and turns it back on.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _end_quietly_while_starting)
    gc.disable()
