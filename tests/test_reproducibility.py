"""Reproducibility: the same inputs give the same bytes, and conf/ and params.yaml never silently disagree.

Each flow runs the commands a user types (`dvc repro`, `dvc exp run`, `dvc exp apply`,
`make run`, `git clone`) with real DVC in a temporary git repository.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.stages.params import compose
from tests.conftest import dvc, run_dvc, runs, stages_run

pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def edit_conf(repo: Path, old: str, new: str) -> None:
    path = repo / "conf" / "config.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def make_run(repo: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`make run` in `repo`, with this environment's packages standing in for the set-up step."""
    real, venv = Path(sys.prefix), tmp_path / "venv"
    if not venv.exists():  # a view of this environment, so that its set-up marker is the test's own
        venv.mkdir()
        for name in ("bin", "lib", "pyvenv.cfg"):
            (venv / name).symlink_to(real / name)
    (venv / ".installed").touch()  # newer than the lock: make's set-up step has nothing to do
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on most machines: Python writes __pycache__/ beside the code
    return subprocess.run(["make", "run", f"VENV={venv}"], cwd=repo, env=env, capture_output=True, text=True)


def test_force_repro_twice_changes_no_output(repo):
    dvc(repo, "repro")
    lock = (repo / "dvc.lock").read_text()
    dvc(repo, "repro", "--force")
    assert (repo / "dvc.lock").read_text() == lock  # every out hash: data/, models/, eval/, metrics.json
    _, (first, second) = runs(repo)
    assert first.info.run_id != second.info.run_id  # two runs, one set of bytes


def test_fresh_clone_make_run_leaves_the_tree_clean_and_runs_are_clean(repo, tmp_path):
    dvc(repo, "repro")
    commit_all(repo, "results")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))

    done = make_run(clone, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stages_run(done.stdout + done.stderr) == ["generate", "train", "evaluate"]  # params is in git
    assert git(clone, "status", "--porcelain") == ""
    assert git(clone, "diff", "HEAD", "--stat") == ""
    assert list(clone.glob("src/**/__pycache__"))  # which DVC ignores (.dvcignore): nothing is stale
    assert "Data and pipelines are up to date." in dvc(clone, "status")
    _, [run] = runs(clone)
    assert run.data.tags["git_dirty"] == "false"
    assert run.data.tags["mlflow.source.git.commit"] == git(clone, "rev-parse", "HEAD").strip()
    assert {"requirements_md5", "cpu", "blas"} <= run.data.tags.keys()

    # a later run in the same clone is still clean: the outputs it wrote match dvc.lock
    later = subprocess.run([sys.executable, "-m", "src.train"], cwd=clone, capture_output=True, text=True)
    assert later.returncode == 0, later.stderr
    _, runs_now = runs(clone)
    assert [r.data.tags["git_dirty"] for r in runs_now] == ["false", "false"]


def test_edit_conf_then_repro_picks_up_the_edit(repo):
    dvc(repo, "repro")
    commit_all(repo, "results")
    edit_conf(repo, "lr: 0.001", "lr: 0.002")
    assert "params" in dvc(repo, "status")  # not "up to date"

    out = dvc(repo, "repro")
    assert stages_run(out) == ["params", "train", "evaluate"]
    assert "recomposed from the edited conf/: lr (params.yaml 0.001, conf/ 0.002)" in out
    assert params(repo)["lr"] == 0.002
    assert yaml.safe_load(compose(repo / "conf")) == params(repo)
    _, (_, second) = runs(repo)
    assert second.data.params["lr"] == "0.002"
    assert "up to date" in dvc(repo, "status")


def test_exp_run_values_survive_make_run(repo, tmp_path):
    dvc(repo, "repro")
    commit_all(repo, "results")
    dvc(repo, "exp", "run", "-S", "lr=0.01", "--name", "fast")
    assert params(repo)["lr"] == 0.01

    done = make_run(repo, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stages_run(done.stdout + done.stderr) == []
    assert params(repo)["lr"] == 0.01
    assert "params.yaml keeps values that differ from conf/: lr (params.yaml 0.01, conf/ 0.001)" in done.stderr
    _, runs_now = runs(repo)
    assert [r.data.params["lr"] for r in runs_now] == ["0.001", "0.01"]


def test_exp_apply_then_repro_keeps_the_experiment_and_a_conflict_stops_early(repo):
    dvc(repo, "repro")
    commit_all(repo, "results")
    dvc(repo, "exp", "run", "--temp", "-S", "lr=0.005", "--name", "slower")
    dvc(repo, "exp", "apply", "slower")
    assert params(repo)["lr"] == 0.005

    assert stages_run(dvc(repo, "repro")) == []  # the experiment's lock matches its params
    _, runs_before = runs(repo)

    edit_conf(repo, "steps: 800", "steps: 900")  # conf/ and params.yaml now both changed
    done = run_dvc(repo, "repro")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert stages_run(output) == ["params"]
    [error] = [line for line in output.splitlines() if line.startswith("error:")]
    assert "lr (params.yaml 0.005, conf/ 0.001)" in error and "steps (params.yaml 800, conf/ 900)" in error
    assert "make params" in error
    assert len(runs(repo)[1]) == len(runs_before)  # nothing trained


def test_hand_edited_params_yaml_gives_the_same_config_error_as_train(repo):
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("lr: 0.001", "lr: -1"))
    done = run_dvc(repo, "repro")
    assert done.returncode != 0
    assert stages_run(done.stdout + done.stderr) == ["params"]
    direct = subprocess.run([sys.executable, "-m", "src.train", "lr=-1"], cwd=repo, capture_output=True, text=True)
    expected = direct.stderr.strip().splitlines()[-1]
    assert expected == "error: config key 'lr': must be a finite number > 0, got -1.0"
    assert expected in done.stderr.splitlines()


def test_a_deleted_or_merged_lock_is_recovered_by_repro(repo):
    dvc(repo, "repro")
    commit_all(repo, "results")
    lock = (repo / "dvc.lock").read_text()
    (repo / "dvc.lock").unlink()
    dvc(repo, "repro")
    assert (repo / "dvc.lock").read_text() == lock

    # Two branches change different keys; both change dvc.lock and metrics.json.
    git(repo, "checkout", "-qb", "more-steps")
    edit_conf(repo, "steps: 800", "steps: 900")
    dvc(repo, "repro")
    commit_all(repo, "steps 900")
    git(repo, "checkout", "-q", "-")
    edit_conf(repo, "noise: 0.2", "noise: 0.3")
    dvc(repo, "repro")
    commit_all(repo, "noise 0.3")
    merge = subprocess.run(["git", "merge", "more-steps"], cwd=repo, capture_output=True, text=True)
    assert merge.returncode != 0 and "dvc.lock" in merge.stdout  # a conflict ...
    assert "<<<<<<<" not in (repo / "dvc.lock").read_text()  # ... that DVC can still read

    dvc(repo, "repro")
    assert (params(repo)["steps"], params(repo)["data"]["noise"]) == (900, 0.3)
    assert "up to date" in dvc(repo, "status")
    merged_lock = (repo / "dvc.lock").read_text()
    dvc(repo, "repro", "--force")  # what a run from nothing gives
    assert (repo / "dvc.lock").read_text() == merged_lock


def test_verify_reports_reproduced_outputs_and_names_a_stale_lock(repo):
    dvc(repo, "repro")
    commit_all(repo, "results")
    verify = [sys.executable, "-m", "src.verify"]
    done = subprocess.run(verify, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reproduced: 10 outputs identical" in done.stdout

    # A lock with the right hashes, in an order `rm dvc.lock; dvc repro` would not write.
    written = (repo / "dvc.lock").read_text()
    lock = yaml.safe_load(written)
    first = next(iter(lock["stages"]))
    lock["stages"][first] = lock["stages"].pop(first)  # the first stage moved to the end
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    commit_all(repo, "a lock in another order")
    done = subprocess.run(verify, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 1 and "writes it in another order or form" in done.stdout, done.stdout
    (repo / "dvc.lock").write_text(written)
    commit_all(repo, "the lock as dvc writes it")

    # A commit whose lock does not match its code.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    [metrics] = [o for o in lock["stages"]["evaluate"]["outs"] if o["path"] == "metrics.json"]
    recorded = metrics["md5"]
    metrics["md5"] = "0" * 32
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    commit_all(repo, "a lock that does not match")
    done = subprocess.run(verify, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 1
    assert "NOT reproduced: 1 of" in done.stdout
    assert f"out metrics.json: committed {'0' * 32}, reproduced {recorded}" in done.stdout
