"""docs/make-it-yours.md, applied as written to a copy of the project: its new files and its
commands, then its one defaults line and `dvc repro` on the new default."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from src import plots
from tests.conftest import BIN, ROOT, copy_store, dvc, runs

pytestmark = pytest.mark.slow

GUIDE = ROOT / "docs" / "make-it-yours.md"
BLOCK = re.compile(r"^```(\w+) ?(\S*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _apply(repo, defaults_line: bool) -> list[str]:
    """Write the guide's new files into `repo` (or, with `defaults_line`, make its one edit to
    conf/config.yaml's defaults list); return its commands."""
    commands = []
    for _, path, text in BLOCK.findall(GUIDE.read_text()):
        if not path:
            commands += [line for line in text.splitlines() if line.strip()]
        elif path == "conf/config.yaml":
            if defaults_line:
                [line] = text.splitlines()
                group = line.split(":")[0] + ":"
                config = (repo / path).read_text().splitlines(keepends=True)
                [i] = [i for i, old in enumerate(config) if old.startswith(group)]
                comment = config[i].find("#")
                config[i] = f"{line:<{comment}}{config[i][comment:]}" if comment > 0 else line + "\n"
                (repo / path).write_text("".join(config))
        elif not defaults_line:
            assert not (repo / path).exists(), f"the guide overwrites {path}; it may only add files"
            (repo / path).write_text(text)
    return commands


def test_the_guides_model_and_backend_run_sweep_pass_the_contracts_and_reproduce(repo, migrated_store):
    copy_store(migrated_store, repo / "mlflow.db")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the project's own store
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # `python` is this environment's
    for command in _apply(repo, defaults_line=False):
        done = subprocess.run(shlex.split(command), cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    client, found = runs(repo)
    single = [r for r in found if r.info.run_name == "cubic python_loop lr=0.001 s0"]
    assert len(single) == 1 and single[0].info.status == "FINISHED"
    jobs = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(jobs) == 2 and all(r.info.status == "FINISHED" for r in jobs)
    assert {r.data.params["model.name"] for r in [*single, *jobs]} == {"cubic"}
    assert {r.data.params["backend.name"] for r in [*single, *jobs]} == {"python_loop"}
    run = single[0]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 800
    assert "lr_bound" not in run.data.params  # the cubic states none
    assert {"fit.png", "loss.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

    # The logged model carries its formula: x³, not the book's x², and without this repository.
    w, b = run.data.metrics["final_w"], run.data.metrics["final_b"]
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(run.data.tags["model_uri"])
    x = np.array([-2.0, 0.5, 3.0])
    assert model.predict(pd.DataFrame({"x": x})) == pytest.approx(w * x**3 + b, rel=1e-12)
    assert abs(w - 3.0) < 0.1 and abs(b - 2.1) < 0.1  # the data is drawn from the cubic

    # The figures name the new model: the guide's file, drawn by the project's plots.
    spec = importlib.util.spec_from_file_location("cubic", repo / "src" / "models" / "cubic.py")
    cubic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cubic)
    assert plots.plot_fit(cubic, x, x, w, b).axes[0].get_title() == f"y = {w:.4f}·x³ + {b:.4f}"
    legend = plots.plot_evaluation(cubic, x, x, x, x, w, b, None).axes[0].get_legend()
    assert f"fit: {w:.4f}·x³ + {b:.4f}" in [t.get_text() for t in legend.get_texts()]

    # The one defaults line, then `dvc repro`: the data, the fit and the evaluation are the cubic's.
    _apply(repo, defaults_line=True)
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert [line for line in changed.splitlines() if not line.startswith("??")] == [" M conf/config.yaml"]
    numstat = subprocess.run(["git", "diff", "--numstat"], cwd=repo, capture_output=True, text=True).stdout
    assert numstat.split()[:2] == ["1", "1"], numstat
    out = dvc(repo, "repro")
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    params = (repo / "params.yaml").read_text()
    assert "module: src.models.cubic" in params and "module: src.backends.numpy_gd" in params
    metrics = (repo / "metrics.json").read_text()
    assert '"test_mse"' in metrics and "loss_gap" not in metrics  # no optimum stated, no gap
