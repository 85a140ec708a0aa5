"""Fit a model (the book's: src/models/quadratic.py) by gradient descent, with NumPy or torch, tracked in MLflow."""

import gc
import os
import signal
import sys

# MLflow sends usage telemetry by default (a lookup of config.mlflow-telemetry.io, then reports),
# and decides once, as it is imported: off, in every process this package starts, unless the
# user turned it on (MLFLOW_DISABLE_TELEMETRY=false).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _end_quietly_while_starting(signum, frame):  # noqa: ARG001
    sys.stderr.write(f"interrupted ({signal.Signals(signum).name}) while starting; nothing was run\n")
    os._exit(130)


# Run as `python -m src.<entry point>`, this package is imported while sys.argv[0] is still "-m".
# Until the entry point installs its own handlers (src.errors.clean_exit), the heavy imports are
# all there is to stop: Ctrl-C or SIGTERM then ends the process with one line, not a traceback.
# The cycle collector is off until then too, for this package's own entry points (all of which
# enter src.errors.clean_exit, which freezes what was imported and turns it back on): the imports
# (MLflow, pandas, SQLAlchemy, Hydra, matplotlib) make millions of objects and no garbage, and the
# collector's repeated full passes over them cost about a second of every run.
if sys.argv[:1] == ["-m"]:
    for _signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signum, _end_quietly_while_starting)
    _argv = sys.orig_argv
    if "-m" in _argv[:-1] and _argv[_argv.index("-m") + 1].startswith("src."):
        gc.disable()
