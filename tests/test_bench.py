"""The benchmarks run end to end in their tiny modes, so that they cannot rot. Nothing is timed here."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_bench_tiny_writes_every_table(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "bench.md").read_text()
    for heading in ("## Per step", "## End to end", "## Peak RSS", "## GPU"):
        assert heading in table
    assert table.count("| 1e+02 |") == 2 and table.count("| 1e+03 |") == 2  # both dtypes at both sizes
    assert "| 0.0e+00 |" in table  # the numpy backend follows §2.6 exactly
    assert (tmp_path / "per_step.png").stat().st_size > 10_000


def test_sweep_bench_tiny_lands_every_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.bench_sweep", "--jobs", "2", "--out", str(tmp_path / "sweep.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "sweep.md").read_text()
    assert table.count("| 2/2 |") == 2, table
