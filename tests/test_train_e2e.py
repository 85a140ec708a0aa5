"""`python -m src.train` as a user runs it, checked in the MLflow store it wrote to."""

import fcntl
import os
import pty
import re
import runpy
import shutil
import signal
import struct
import subprocess
import sys
import termios

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from src.backends import numpy_gd
from src.config import load_config
from src.errors import TrainingDiverged
from src.problem import make_problem
from tests.conftest import ROOT, book_fit, compose_config, mlflow_service, rest, run_cli, train_here

pytestmark = pytest.mark.slow
matplotlib.use("Agg")
ARTIFACTS = {"loss.png", "fit.png", "config.yaml", "history.csv"}


def _runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("autograd-fit")
    return client, client.search_runs([experiment.experiment_id])


def test_default_run_records_everything(tmp_path, tracking_env):
    umask = os.umask(0o022)
    try:
        done = run_cli(cwd=tmp_path, env=tracking_env)
    finally:
        os.umask(umask)
    assert done.returncode == 0, done.stderr
    client, runs = _runs(tracking_env["MLFLOW_TRACKING_URI"])
    [run] = runs
    assert run.info.status == "FINISHED"
    assert run.info.run_id in done.stdout and "mlflow ui" in done.stdout
    assert (
        f"run page: http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in done.stdout
    )
    assert run.info.run_name == "quadratic numpy lr=0.001 s0"  # what varies

    # MLflow's own tags, which fill the runs table's Source and "Created by" columns
    tags = run.data.tags
    assert tags["mlflow.source.name"] == str(ROOT / "src" / "train.py") and tags["mlflow.source.type"] == "LOCAL"
    git_head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.user"] and tags["mlflow.source.git.commit"] == git_head and "git_commit" not in tags
    inputs = {d.dataset.name: [t.value for t in d.tags] for d in run.inputs.dataset_inputs}
    assert inputs == {"train": ["training"], "test": ["evaluation"]}

    # the model: loadable as pyfunc, and it is w·x² + b with the run's final w and b
    mlflow.set_tracking_uri(tracking_env["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    x_new = np.array([-2.0, -0.3, 0.0, 0.7, 5.0])
    w_final, b_final = run.data.metrics["final_w"], run.data.metrics["final_b"]
    np.testing.assert_array_equal(model.predict(pd.DataFrame({"x": x_new})), w_final * x_new**2 + b_final)

    # files are readable by others, as the umask says: none is left 0600 by a temporary file
    files = [f for f in tmp_path.rglob("*") if f.is_file()]  # outputs/, mlruns/ and the store
    assert len(files) > 8 and {oct(f.stat().st_mode & 0o777) for f in files} == {"0o644"}

    params = run.data.params
    assert params["data.n"] == "100" and params["lr"] == "0.001" and params["backend.name"] == "numpy"
    assert params["steps"] == "800" and params["rng"] == "generator" and "lr_bound" in params
    tags = run.data.tags
    assert tags["backend"] == "numpy" and tags["device"] == "cpu"
    assert {"git_dirty", "numpy_version", "torch_version"} <= set(tags)

    history = {key: client.get_metric_history(run.info.run_id, f"train/{key}") for key in ("loss", "w", "b")}
    assert all([p.step for p in points] == list(range(800)) for points in history.values())
    loss, w, b = (np.array([p.value for p in history[key]]) for key in ("loss", "w", "b"))
    log10_loss = [p.value for p in client.get_metric_history(run.info.run_id, "train/log10_loss")]
    np.testing.assert_allclose(log10_loss, np.log10(loss), rtol=1e-15)
    # Each logged loss is the loss at the previous step's logged parameters, recomputed here.
    x, y, _, _ = make_problem(load_config(compose_config()))
    recomputed = [0.5 * np.sum((w[i - 1] * x**2 + b[i - 1] - y) ** 2) for i in range(1, 800)]
    np.testing.assert_allclose(loss[1:], recomputed, rtol=1e-12)
    assert run.data.metrics["final_w"] == w[-1] and run.data.metrics["final_b"] == b[-1]

    assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS
    local = client.download_artifacts(run.info.run_id, "history.csv", str(tmp_path / "dl"))
    table = np.loadtxt(local, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table[:, 1], loss)
    output_dirs = list((tmp_path / "outputs").glob("*/*"))
    assert len(output_dirs) == 1 and ARTIFACTS <= {p.name for p in output_dirs[0].iterdir()}


@pytest.mark.parametrize(
    "preset,book_file,w_name,b_name",
    [("seed_numpy", "section_2_6.py", "w1", "b1"), ("seed_torch", "section_2_7.py", "w", "b")],
)
@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_presets_log_the_books_final_values(preset, book_file, w_name, b_name, tmp_path, tracking_env):
    train_here(f"experiment={preset}", output_dir=tmp_path / "out")
    [run] = _runs(tracking_env["MLFLOW_TRACKING_URI"])[1]
    book = runpy.run_path(str(ROOT / "tests" / "book" / book_file))
    # MLflow stores float64, which holds the float32 values of §2.7 exactly.
    assert run.data.metrics["final_w"] == book[w_name].item()
    assert run.data.metrics["final_b"] == book[b_name].item()


def test_torch_run_with_overrides(tmp_path, tracking_env):
    train_here("backend=torch", "lr=0.01", "seed=1", output_dir=tmp_path / "out")
    [run] = _runs(tracking_env["MLFLOW_TRACKING_URI"])[1]
    assert run.data.params["backend.name"] == "torch" and run.data.params["lr"] == "0.01"
    assert run.data.tags["device"] == "cpu"
    assert run.info.status == "FINISHED"


def test_runs_from_any_folder_land_in_the_project_database_that_mlflow_ui_shows(tmp_path):
    project = tmp_path / "project"
    for part in ("src", "conf"):
        shutil.copytree(ROOT / part, project / part)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(project)
    done = subprocess.run(
        [sys.executable, "-m", "src.train", "steps=3"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (project / "mlflow.db").exists() and not (elsewhere / "mlflow.db").exists()
    [run] = _runs(f"sqlite:///{project / 'mlflow.db'}")[1]
    assert run.info.artifact_uri.startswith((project / "mlruns").as_uri())

    # Plain `mlflow ui` from the project root serves that run, with its artifacts.
    with mlflow_service("ui", cwd=project) as url:
        experiment = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=autograd-fit")["experiment"]
        found = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert [r["info"]["run_id"] for r in found] == [run.info.run_id]
        files = rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={run.info.run_id}")["files"]
        assert {f["path"] for f in files} == ARTIFACTS


def test_lr_above_the_bound_warns_before_training(tmp_path, tracking_env):
    done = run_cli("lr=0.02", "steps=20", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 1, done.stderr
    log = done.stdout + done.stderr
    assert "lr=0.02 is at or above the stability bound 2/λ_max = 0.0177621" in log
    assert log.index("stability bound") < log.index("error: the loss rose at step 1,")


@pytest.mark.parametrize(
    "lr,stop",
    [("0.0181", "the loss rose at step "), ("1e160", "the loss became non-finite at step ")],
    ids=["just-above-the-bound", "overflow"],
)
def test_divergence_stops_the_run_and_fails_it(lr, stop, tmp_path, tracking_env):
    done = run_cli(f"lr={lr}", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    step = int(line.split(stop)[1].split()[0].rstrip(","))
    assert 0 < step < 800
    assert "stable only for lr < 0.0177621" in line

    client, [run] = _runs(tracking_env["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == line.removeprefix("error: ")
    loss = [p.value for p in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(loss) == step and np.isfinite(loss).all()  # no step was run on a non-finite loss


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_loss_not_finite_from_the_start_fails_the_run_whatever_the_threshold(backend, tmp_path, tracking_env):
    with pytest.raises(TrainingDiverged, match=r"not finite at the start \(step 0\).*scale the data down"):
        train_here(f"backend={backend}", "data.true_w=1e300", output_dir=tmp_path / "out")
    client, [run] = _runs(tracking_env["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED" and run.data.tags["diverged"] == "true"
    assert not run.outputs.model_outputs and "final_loss" not in run.data.metrics


def test_a_backend_that_misses_a_non_finite_loss_still_fails_its_run(tmp_path, tracking_env, monkeypatch):
    """The check is the pipeline's, not each backend's: a History that says it converged, with an
    infinite loss in it, still ends FAILED, with no model."""
    fit = numpy_gd.fit

    def forgetful(*args, **kwargs):
        history = fit(*args, **kwargs)
        return history._replace(loss=np.where(history.step == 3, np.inf, history.loss), diverged=False)

    monkeypatch.setattr(numpy_gd, "fit", forgetful)
    with pytest.raises(TrainingDiverged, match=" at step 3"):
        train_here("steps=10", output_dir=tmp_path / "out")
    client, [run] = _runs(tracking_env["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED" and not run.outputs.model_outputs


def test_every_file_and_folder_follows_the_umask_exactly(tmp_path, new_store_env):
    """The store, the run's folder and every artifact (the model's code too) take their mode from the
    umask, whatever it is: none is left 0600 by a temporary file, nor keeps a source file's mode."""
    done = subprocess.run([sys.executable, "-m", "src.train", "steps=5"], cwd=tmp_path, env=new_store_env,
                          capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o027))  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = list(tmp_path.rglob("*"))  # mlflow.db, mlruns/, outputs/
    assert len(made) > 20
    assert {oct(p.stat().st_mode & 0o777) for p in made if p.is_file()} == {"0o640"}
    assert {oct(p.stat().st_mode & 0o777) for p in made if p.is_dir()} == {"0o750"}


def _on_a_terminal(args: list[str], cwd, env) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; return its exit status and what the terminal showed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=terminal
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return process.wait(timeout=120), shown.decode(errors="replace")


def test_progress_bar_shows_on_a_terminal_only_for_long_runs(tmp_path, tracking_env):
    status, shown = _on_a_terminal(["data.n=1000000", "steps=1500", "lr=1e-7"], tmp_path, tracking_env)  # 4 s here
    assert status == 0
    assert "step/s" in shown and "/1500" in shown
    status, shown = _on_a_terminal(["steps=800"], tmp_path, tracking_env)
    assert status == 0 and "step/s" not in shown


def test_log_every_keeps_every_kth_step_in_mlflow_and_the_history_file(tmp_path, tracking_env):
    train_here("log_every=100", output_dir=tmp_path / "out")
    client, [run] = _runs(tracking_env["MLFLOW_TRACKING_URI"])
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [p.step for p in loss] == [0, 100, 200, 300, 400, 500, 600, 700, 799]
    table = np.loadtxt(tmp_path / "out" / "history.csv", delimiter=",", skiprows=1)
    assert table[:, 0].tolist() == [p.step for p in loss]
    x, y, w0, b0 = make_problem(load_config(compose_config()))
    full = book_fit("numpy", x, y, w0, b0, lr=0.001, steps=800)  # every step, in this process
    np.testing.assert_array_equal([p.value for p in loss], full.loss[table[:, 0].astype(int)])
    assert run.data.metrics["final_w"] == full.w[-1]


def test_a_long_run_is_announced_before_it_starts(tmp_path, tracking_env):
    process = subprocess.Popen([sys.executable, "-m", "src.train", "steps=100000000"], cwd=tmp_path, env=tracking_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = process.stderr.readline()
        assert re.search(
            r"WARNING\] - this run is estimated to take \d+ min and to log 100000000 steps "
            r"\(about 40.0 GB in MLflow\); log_every=\d+ would log about 0.1\d GB$",
            line,
        ), line
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 130


def test_artifacts_that_cannot_be_written_end_the_run_in_one_line(tmp_path, tracking_env):
    (tmp_path / "mlruns").write_text("a file where the artifact folder should be")
    done = run_cli("steps=5", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: cannot write ") and "mlruns" in line
    _, [run] = _runs(tracking_env["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED" and run.data.tags["error"]
