"""The DVC pipeline, with real `dvc` in a temporary git repository made from the project's files."""

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import BIN, ROOT, compose_config, dvc, mlflow_service, rest, run_dvc, runs, stages_run

GIT_RESULTS = ("params.yaml", "metrics.json")  # outputs that git holds, not the DVC cache


def test_params_yaml_is_the_composition_of_conf():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    composed = OmegaConf.to_container(compose_config(), resolve=True)
    assert committed == composed, "params.yaml is stale: run `make params`"


@pytest.mark.slow
def test_repro_runs_what_changed_and_logs_one_run_per_training(repo):
    assert stages_run(dvc(repo, "repro")) == ["params", "generate", "train", "evaluate"]
    assert stages_run(dvc(repo, "repro")) == []

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["lr"] = 0.005
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert stages_run(dvc(repo, "repro")) == ["params", "train", "evaluate"]

    client, (first, second) = runs(repo)
    assert [first.data.params["lr"], second.data.params["lr"]] == ["0.001", "0.005"]
    assert {first.info.status, second.info.status} == {"FINISHED"}
    # metrics.json holds the headline metrics, eval/details.json the rest, and MLflow all of them,
    # in the run that train opened
    headline = json.loads((repo / "metrics.json").read_text())
    details = json.loads((repo / "eval" / "details.json").read_text())
    assert list(headline) == ["test_mse", "test_r2", "loss_gap"]
    assert not headline.keys() & details.keys()
    metrics = headline | details
    assert {k: second.data.metrics[k] for k in metrics} == metrics
    assert {a.path for a in client.list_artifacts(second.info.run_id, "evaluation")} == {
        f"evaluation/{name}" for name in ("loss.csv", "loss.png", "fit.png", "metrics.json", "details.json")
    }
    # provenance: the hash of the data file the run trained on
    data_md5 = subprocess.run(["md5sum", "data/train.csv"], cwd=repo, capture_output=True, text=True).stdout.split()[0]
    assert second.data.tags["data_md5"] == data_md5

    # The optimum evaluate reports is the least-squares solution, computed here independently.
    table = np.loadtxt(repo / "data" / "train.csv", delimiter=",", skiprows=1)
    x, y = table[:, 0], table[:, 1]
    (w_star, b_star), *_ = np.linalg.lstsq(np.column_stack([x**2, np.ones_like(x)]), y, rcond=None)
    assert metrics["w_star"] == pytest.approx(w_star, rel=1e-12)
    assert metrics["b_star"] == pytest.approx(b_star, rel=1e-12)
    assert metrics["loss_gap"] >= -1e-12 * metrics["optimal_loss"]  # no fit beats the optimum


def _paths(entries: list) -> list[str]:
    """The paths of a stage's deps, outs, metrics or plots as dvc.yaml lists them (a path, or {path: options})."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def _is_under(path: str, listed: list[str]) -> bool:
    return any(path == entry or path.startswith(f"{entry}/") for entry in listed)


def _files_touched(repo: Path, cmd: str, record: Path) -> list[str]:
    """The project files that a stage's command imported or read, run as DVC runs it (tests/stage_files.py)."""
    words = shlex.split(cmd)
    assert words[:3] == ["exec", "python", "-m"], cmd
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [str(BIN / "python"), str(ROOT / "tests" / "stage_files.py"), str(record), *words[3:]],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    touched = json.loads(record.read_text())
    paths = {Path(p) for p in touched["imported"] + touched["read"]}
    relative = {str(p.relative_to(repo)) for p in paths if p.is_relative_to(repo) and p.is_file()}
    store = ("mlflow.db", "mlruns/", ".git/", ".dvc/")  # the tracking store, and what git and DVC keep
    return sorted(p for p in relative if "__pycache__" not in p and not p.startswith(store))


@pytest.mark.slow
def test_every_file_a_stage_imports_or_reads_is_one_of_its_deps(repo, tmp_path):
    dvc(repo, "repro")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    missed = {}
    for name, stage in stages.items():
        deps = _paths(stage["deps"])
        outs = _paths(stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []))
        assert "requirements.lock" in deps, f"stage {name}: a package upgrade would not rerun it"
        touched = _files_touched(repo, stage["cmd"], tmp_path / f"{name}.json")
        assert f"src/stages/{name}.py" in touched  # the record is of the stage's own run
        if left_out := [f for f in touched if not _is_under(f, deps + outs) and f != "params.yaml"]:  # params: keys
            missed[name] = left_out
    assert not missed, f"stages import or read files that dvc.yaml does not list in their deps: {missed}"


@pytest.mark.slow
def test_editing_code_or_the_lock_reruns_the_stages_that_run_on_it(repo):
    dvc(repo, "repro")

    def stale() -> set[str]:
        return set(json.loads(dvc(repo, "status", "--json")))

    model = repo / "src" / "models" / "quadratic.py"
    model.write_text(model.read_text().replace("0.5 * np.sum(r * r)", "0.25 * np.sum(r * r)"))
    assert stale() == {"generate", "train", "evaluate"}
    subprocess.run(["git", "checkout", "src/models/quadratic.py"], cwd=repo, check=True)
    assert stale() == set()
    with open(repo / "requirements.lock", "a") as lock:
        lock.write("# upgraded\n")
    assert stale() == {"params", "generate", "train", "evaluate"}


@pytest.mark.slow
def test_a_pipeline_model_takes_best_only_when_it_beats_it(repo):
    first = dvc(repo, "repro")
    assert "registered models:/autograd-fit version 1 (models:/autograd-fit/latest); it takes @best" in first
    worse = dvc(repo, "exp", "run", "-S", "steps=30")  # stopped early: further from the held-out data
    line = next(line for line in worse.splitlines() if "registered models:/autograd-fit version 2" in line)
    assert "not @best: held-out MSE" in line and "does not beat version 1's" in line
    client, _ = runs(repo)
    assert str(client.get_model_version_by_alias("autograd-fit", "best").version) == "1"


@pytest.mark.slow
def test_exp_run_overrides_reach_training(repo):
    dvc(repo, "exp", "run", "-S", "lr=0.01", "--name", "fast-lr")
    dvc(repo, "exp", "run", "-S", "backend=torch", "--name", "on-torch")

    _, (lr_run, torch_run) = runs(repo)
    assert lr_run.data.params["lr"] == "0.01" and lr_run.data.params["backend.name"] == "numpy"
    assert lr_run.data.tags["dvc_exp_name"] == "fast-lr"
    assert torch_run.data.params["backend.name"] == "torch" and torch_run.data.tags["backend"] == "torch"
    assert torch_run.data.tags["dvc_exp_name"] == "on-torch"

    shown = json.loads(dvc(repo, "exp", "show", "--json").strip().splitlines()[-1])
    names = {exp.get("name") for commit in shown for exp in (commit.get("experiments") or [])}
    assert {"fast-lr", "on-torch"} <= names

    # The one command that compares experiments (docs/pipeline.md) fits 120 columns, paged or not, and
    # answers "which lr gave what". (With --no-pager, rich fits the table to COLUMNS by folding
    # columns into "…"; the pager gets full lines.)
    page = (ROOT / "docs" / "pipeline.md").read_text()
    [line] = [line for line in page.splitlines() if line.startswith("dvc exp show --")]
    compare = shlex.split(line.split("  #")[0])[1:]
    headers = "Experiment test_mse test_r2 loss_gap backend.name lr steps seed data.n".split()
    for pager in ([], ["--no-pager"]):
        done = subprocess.run([str(BIN / "dvc"), *compare, *pager], cwd=repo, env={**os.environ, "COLUMNS": "120"},
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        lines = done.stdout.strip().splitlines()
        assert done.returncode == 0 and max(map(len, lines)) <= 120 and "…" not in done.stdout, done.stdout
        assert [line.split() for line in lines if "Experiment" in line] == [headers]
        rows = {cells[2]: dict(zip(headers[1:], cells[3:], strict=True)) for cells in map(str.split, lines)
                if len(cells) == 3 + len(headers) - 1 and cells[2].startswith("[")}  # fmt: skip
        assert (rows["[fast-lr]"]["lr"], rows["[fast-lr]"]["backend.name"]) == ("0.01", "numpy")
        assert (rows["[on-torch]"]["lr"], rows["[on-torch]"]["backend.name"]) == ("0.001", "torch")
        assert float(rows["[fast-lr]"]["test_mse"]) > 0


@pytest.mark.slow
def test_temp_experiment_lands_in_the_project_database(repo):
    dvc(repo, "exp", "run", "--temp", "-S", "lr=0.002", "--name", "in-temp")
    _, [run] = runs(repo)
    assert run.data.params["lr"] == "0.002"
    assert run.data.tags["dvc_exp_name"] == "in-temp"
    assert run.info.artifact_uri.startswith((repo / "mlruns").as_uri())
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db")), "a throwaway store was created"


@pytest.mark.slow
def test_metrics_and_plots_show_offline(repo):
    dvc(repo, "repro")
    assert "test_r2" in dvc(repo, "metrics", "show")
    dvc(repo, "plots", "show")
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "vegaEmbed" in page  # the loss-curve data is drawn by vega ...
    assert not re.search(r"<script[^>]+src\s*=", page)  # ... which is inlined, not fetched
    assert not re.search(r"""(src|href)\s*=\s*["']https?://""", page)
    images = re.findall(r'<img src="(static/[^"]+)"', page)
    assert {Path(i).name for i in images} == {"workspace_eval_fit.png", "workspace_eval_loss.png"}
    assert all((repo / "dvc_plots" / i).is_file() for i in images)


@pytest.mark.slow
def test_queued_experiments_land_in_the_project_database(repo):
    dvc(repo, "exp", "run", "--queue", "-S", "lr=0.001,0.01")
    dvc(repo, "queue", "start")
    deadline = time.monotonic() + 400
    while re.search(r"\b(Queued|Running)\b", status := dvc(repo, "queue", "status")):
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status
    _, finished = runs(repo)
    assert sorted(r.data.params["lr"] for r in finished) == ["0.001", "0.01"]
    assert all(r.info.status == "FINISHED" and r.data.tags.get("dvc_exp_name") for r in finished)
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db")), "a throwaway store was created"


@pytest.mark.slow
def test_a_diverging_training_leaves_nothing_dvc_accepts(repo):
    dvc(repo, "repro")
    lock_before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["lr"] = 0.1
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    done = run_dvc(repo, "repro")
    assert done.returncode != 0
    assert "error: the loss rose at step 1, from" in done.stderr + done.stdout
    lock_after = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ("train", "evaluate"):  # (the params stage did its part, and is recorded)
        assert lock_after[stage] == lock_before[stage], f"the failed {stage} stage was recorded as done"
    assert not (repo / "models" / "fit.json").exists()
    assert "train" in dvc(repo, "status")
    _, [good, failed] = runs(repo)
    assert (good.info.status, failed.info.status) == ("FINISHED", "FAILED")


@pytest.mark.slow
def test_a_pipeline_run_is_complete_in_mlflows_rest_api_and_its_model_serves(repo, tmp_path):
    dvc(repo, "repro")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    fit = json.loads((repo / "models" / "fit.json").read_text())
    store = f"sqlite:///{repo / 'mlflow.db'}"
    with mlflow_service("server", "--workers", "1", "--backend-store-uri", store, cwd=repo) as url:
        experiment = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=autograd-fit")["experiment"]
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
        [found] = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        run = rest(url, f"/api/2.0/mlflow/runs/get?run_id={found['info']['run_id']}")["run"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["mlflow.source.name"] == str(repo / "src" / "stages" / "train.py")
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
        assert tags["mlflow.source.git.commit"] == commit
        inputs = {
            d["dataset"]["name"]: ({t["value"] for t in d["tags"]}, d["dataset"]["source"])
            for d in run["inputs"]["dataset_inputs"]
        }
        assert inputs.keys() == {"train", "test"}
        assert inputs["train"][0] == {"training"} and "data/train.csv" in inputs["train"][1]
        assert inputs["test"][0] == {"evaluation"} and "data/test.csv" in inputs["test"][1]
        [output] = run["outputs"]["model_outputs"]  # the logged model, which carries the fit's scores
        model = rest(url, f"/api/2.0/mlflow/logged-models/{output['model_id']}")["model"]
        scores = {m["key"]: (m["value"], m["dataset_name"]) for m in model["data"]["metrics"]}
        digests = {d["dataset"]["name"]: d["dataset"]["digest"] for d in run["inputs"]["dataset_inputs"]}
        assert {m["dataset_digest"] for m in model["data"]["metrics"]} == set(digests.values())
        assert all(m["run_id"] == run["info"]["run_id"] for m in model["data"]["metrics"])
        # the fit's scores, each once, on the data it was measured on; evaluate's other numbers are the run's
        assert sorted(m["key"] for m in model["data"]["metrics"]) == ["final_b", "final_loss", "final_w", "test_mse",
                                                                       "test_r2"]  # fmt: skip
        assert scores["final_loss"][1] == "train" and scores["test_mse"][1] == "test"
        assert scores["test_r2"] == (json.loads((repo / "metrics.json").read_text())["test_r2"], "test")
        alias = rest(url, "/api/2.0/mlflow/registered-models/alias?name=autograd-fit&alias=best")["model_version"]
        assert alias["run_id"] == run["info"]["run_id"]
        assert alias["description"].startswith(
            f"numpy lr=0.001 objective=train_loss; training data {digests['train']}, held-out data {digests['test']}; "
            f"held-out MSE {scores['test_mse'][0]:.6g}"
        )
        assert alias["description"].endswith(f"registered by {tags['mlflow.user']}")

    # `mlflow models predict` on the registry alias, as docs/tracking.md shows it
    (tmp_path / "x.csv").write_text("x\n-1.5\n0\n0.25\n2\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    done = subprocess.run(
        [str(BIN / "mlflow"), "models", "predict", "-m", "models:/autograd-fit@best", "-i", str(tmp_path / "x.csv"),
         "-t", "csv", "--env-manager", "local", "-o", str(tmp_path / "y.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    predicted = json.loads((tmp_path / "y.json").read_text())["predictions"]
    x = np.array([-1.5, 0, 0.25, 2])
    np.testing.assert_array_equal(predicted, fit["w"] * x**2 + fit["b"])


@pytest.mark.slow
def test_push_and_pull_through_the_default_remote(repo, tmp_path):
    project = dvc(repo, "config", "--project", "--list").split()
    assert "core.remote=storage" in project
    home = Path("~/.cache/autograd-pipeline/dvc-remote").expanduser()  # each user's own, outside any clone
    assert f"remote.storage.url={home}" in project
    remote = tmp_path / "dvc-remote" / "storage"  # where the repo fixture points it, not the user's folder
    assert dvc(repo, "config", "remote.storage.url").strip() == str(remote)

    dvc(repo, "repro")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "results"], cwd=repo, check=True)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    cached = [repo / o["path"] for stage in lock.values() for o in stage["outs"] if o["path"] not in GIT_RESULTS]
    files = sorted(f for out in cached for f in ([out] if out.is_file() else out.rglob("*")) if f.is_file())
    before = {f.relative_to(repo): f.read_bytes() for f in files}
    assert {f.parts[0] for f in before} == {"data", "models", "eval"}
    dvc(repo, "push")
    assert any(remote.rglob("*"))

    # With no copy of HEAD's outputs in the clone, `dvc plots diff` reads them from the remote.
    shutil.rmtree(repo / ".dvc" / "cache")
    assert "failed to load" not in dvc(repo, "plots", "diff", "HEAD")

    for out in cached:
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    assert "deleted" in dvc(repo, "status")
    dvc(repo, "pull")
    assert "Data and pipelines are up to date." in dvc(repo, "status")
    assert {f.relative_to(repo): f.read_bytes() for f in files} == before
