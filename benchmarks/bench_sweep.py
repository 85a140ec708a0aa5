"""Benchmark: an N-job sweep with the joblib launcher (2 workers) against Hydra's basic launcher.

`python -m benchmarks.bench_sweep [--jobs 8]` runs `python -m src.train -m seed=0,...,N-1`
both ways, each on a fresh SQLite store in a temporary folder, and prints the wall times,
their ratio, and whether every run landed complete (FINISHED, 800 logged steps). The table
is also written to `bench_sweep.md`. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

LAUNCHERS = {"basic": [], "joblib (2 workers)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def run_sweep(jobs: int, launcher_args: list[str]) -> tuple[float, int]:
    """Wall seconds of one sweep, and how many of its jobs' runs landed complete."""
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        seeds = ",".join(str(s) for s in range(jobs))
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "src.train", "-m", *launcher_args, f"seed={seeds}"],
            cwd=folder, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, check=True, capture_output=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("autograd-fit")
        children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
        complete = sum(
            r.info.status == "FINISHED" and len(client.get_metric_history(r.info.run_id, "train/loss")) == 800
            for r in children
        )
        return wall, complete


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--out", default="bench_sweep.md")
    args = parser.parse_args(argv)
    results = {name: run_sweep(args.jobs, launcher_args) for name, launcher_args in LAUNCHERS.items()}
    basic_wall = results["basic"][0]
    lines = [
        f"{args.jobs}-job sweep (`python -m src.train -m seed=0..{args.jobs - 1}`), fresh SQLite store each",
        "",
        "| launcher | wall time (s) | vs basic | runs landed complete |",
        "| --- | --- | --- | --- |",
    ]
    for name, (wall, complete) in results.items():
        lines.append(f"| {name} | {wall:.1f} | {basic_wall / wall:.2f}x | {complete}/{args.jobs} |")
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
