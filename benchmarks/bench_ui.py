"""Benchmark: `make ui` (python -m src.ui) against plain `mlflow ui`, on one copy of a store.

`python -m benchmarks.bench_ui [--repeats 2] [--store mlflow.db]` starts each in turn
(interleaved), and measures the seconds until its /health answers, then its processes and
their total resident memory. It prints a table and writes it to `bench_ui.md`, with the load
average beside it. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(store: str, port: int) -> dict[str, list[str]]:
    return {
        "mlflow ui": [MLFLOW, "ui", "--backend-store-uri", store, "--port", str(port)],
        "make ui": [sys.executable, "-m", "src.ui", "--store", store, "--port", str(port)],
    }


def measure(command: list[str], port: int) -> tuple[float, int, float]:
    """Seconds to the first answer, the number of processes, and their resident MiB, once answering."""
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None, f"{command[:2]} exited"
                time.sleep(0.1)
        seconds = time.perf_counter() - started
        time.sleep(3)  # let every worker and consumer finish starting
        tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        rss = sum(p.memory_info().rss for p in tree) / 2**20
        return seconds, len(tree), rss
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--store", default="mlflow.db", help="an MLflow SQLite store to copy (default: the project's)")
    parser.add_argument("--out", default="bench_ui.md")
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, int, float]]] = {"mlflow ui": [], "make ui": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "mlflow.db"
        if Path(args.store).exists():
            shutil.copy(args.store, store)
        for _ in range(args.repeats):
            for name in results:  # interleaved, so a change of load hits both alike
                port = _free_port()
                results[name].append(measure(commands(f"sqlite:///{store}", port)[name], port))
    lines = [
        f"`mlflow ui` vs `make ui`, {args.repeats} starts each, interleaved; "
        f"{os.cpu_count()} CPUs, load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
        "",
        "| command | first answer (s), min / median | processes | resident memory (MiB), median |",
        "| --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        seconds = [r[0] for r in runs]
        lines.append(
            f"| `{name}` | {min(seconds):.1f} / {statistics.median(seconds):.1f} | {runs[-1][1]} "
            f"| {statistics.median(r[2] for r in runs):.0f} |"
        )
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
