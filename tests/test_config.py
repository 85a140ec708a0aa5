"""The composed config: overrides, presets, and a clear error for every bad value."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from src.config import Device, DType, Stream, flatten, load_config
from src.errors import ConfigError, DataFileError
from src.models import quadratic
from src.problem import make_problem
from src.train import HIDDEN_FOLDER, check_data
from tests.conftest import CONF, backend_module, compose_config, run_cli

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_defaults_load_typed():
    config = load_config(compose_config())
    assert config.backend.name == "numpy" and config.model.name == "quadratic"
    assert config.device is Device.auto and config.dtype is DType.float64 and config.rng is Stream.generator
    assert (config.lr, config.steps, config.data.n, config.data.noise) == (0.001, 800, 100, 0.2)


def test_overrides_reach_the_typed_config():
    config = load_config(compose_config("backend=torch", "lr=0.01", "seed=1", "data.n=7", "device=cpu"))
    assert config.backend.name == "torch" and config.device is Device.cpu
    assert (config.lr, config.seed, config.data.n) == (0.01, 1, 7)


def test_presets_exist():
    assert {"seed_numpy", "seed_torch"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_loads(preset):
    config = load_config(compose_config(f"experiment={preset}"))
    assert config.steps >= 1


def test_the_local_launcher_is_the_plugins_submitit_local_with_ctrl_c_left_to_the_sweep():
    """conf/hydra/launcher/local.yaml restates hydra-submitit-launcher's LocalQueueConf, to add the
    `setup` line its schema has no key for; if the plugin's settings change, so must the file."""
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf

    ours = OmegaConf.load(CONF / "hydra" / "launcher" / "local.yaml")
    assert ours.pop("setup") == ["trap '' INT"]
    assert ours == OmegaConf.structured(LocalQueueConf)


def test_seed_presets_select_the_books_streams():
    numpy = load_config(compose_config("experiment=seed_numpy"))
    torch_ = load_config(compose_config("experiment=seed_torch"))
    assert numpy.model.name == torch_.model.name == "quadratic"  # the book's, whatever the default
    assert (numpy.backend.name, numpy.rng, numpy.seed, numpy.dtype) == (
        "numpy", Stream.legacy_numpy, 100, DType.float64,
    )  # fmt: skip
    assert (torch_.backend.name, torch_.rng, torch_.seed, torch_.dtype) == (
        "torch", Stream.legacy_torch, 100, DType.float32,
    )  # fmt: skip


@pytest.mark.parametrize(
    "override,key,says",
    [
        ("+lrr=0.1", "lrr", "not in"),
        ("device=gpu", "device", "expected one of [cpu, cuda, auto]"),
        ("dtype=float16", "dtype", "expected one of [float32, float64]"),
        ("rng=mt19937", "rng", "expected one of"),
        ("init.w=ones", "init.w", "expected one of [uniform, normal, zeros]"),
        ("lr=abc", "lr", "could not be converted"),
        ("steps=1.5", "steps", "could not be converted"),
        ("lr=0", "lr", "> 0"),
        ("lr=-0.001", "lr", "> 0"),
        ("lr=nan", "lr", "finite"),
        ("lr=inf", "lr", "finite"),
        ("steps=0", "steps", ">= 1"),
        ("data.n=1", "data.n", ">= 2"),
        ("data.noise=-0.1", "data.noise", ">= 0"),
        ("data.x_min=1.0", "data.x_min", "x_min < x_max"),
        ("data.x_max=-2.0", "data.x_min", "x_min < x_max"),
        ("log_every=0", "log_every", ">= 1"),
        ("seed=-1", "seed", ">= 0"),
        ("seed=4294967296 rng=legacy_numpy", "seed", "below 2**32"),
        ("seed=99999999999999999999 rng=legacy_torch", "seed", "below 2**64"),
        ("experiment_name=${oc.env:HOME}", "experiment_name", "reads the environment"),
        ("+data.tag=run-${oc.env:HOME}", "data.tag", "reads the environment"),
    ],
)
def test_bad_values_name_the_key(override, key, says):
    with pytest.raises(ConfigError) as error:
        load_config(compose_config(*override.split()))
    assert f"config key '{key}'" in str(error.value)
    assert says in str(error.value)


@pytest.mark.parametrize(
    "n,x_min,x_max", [(2, -1.0, 1.0), (2, -2.5, 2.5), (2, -1.0, 2.0), (2, 0.0, 1.0), (3, -1.0, 1.0), (4, -1.0, 1.0)]
)
def test_a_run_refuses_exactly_the_grids_whose_optimum_is_not_unique(n, x_min, x_max):
    """The check before a run starts agrees with what `evaluate` meets on the grid itself."""
    try:
        quadratic.optimum(np.linspace(x_min, x_max, n), np.arange(n, dtype=np.float64))
        unique = True
    except ValueError:
        unique = False
    overrides = (f"data.n={n}", f"data.x_min={x_min}", f"data.x_max={x_max}")
    x, y, _, _ = make_problem(load_config(compose_config(*overrides)))
    if unique:
        check_data(quadratic, x, y)
    else:
        with pytest.raises(DataFileError, match="the optimum is not unique: all 2 points have the same x²"):
            check_data(quadratic, x, y)


def test_unknown_backend_lists_the_choices():
    with pytest.raises(MissingConfigException) as error:
        compose_config("backend=jax")
    assert "backend/jax" in str(error.value)
    assert "Available options in 'backend':\n\tnumpy\n\ttorch" in str(error.value)


def test_misspelt_key_is_refused_at_composition():
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_config("lrr=0.1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_why():
    with pytest.raises(ValueError, match="device=cuda was asked for, but .*use device=cpu"):
        backend_module("torch").resolve_device("cuda")
    assert backend_module("torch").resolve_device("auto") == "cpu"


KEY_LIST = "(python -m src.train --help lists every key)"


@pytest.mark.slow
@pytest.mark.parametrize(
    "command_line,says",
    [
        ("lr=-1", "error: config key 'lr': must be a finite number > 0"),
        ("data.n=1", "error: config key 'data.n': must be >= 2"),
        ("steps=many", "error: config key 'steps'"),
        ("experiment_name=${oc.env:SECRET_X}", "error: config key 'experiment_name': ${oc.env:SECRET_X} reads the env"),
        ("data.n=100000000000", "error: config key 'data.n': 100000000000 points need about"),
        ("steps=1000000000000", "error: config key 'steps': a history of 1000000000000 kept steps needs about"),
        ("lrr=0.1", f"error: unknown key 'lrr'; did you mean 'lr'? {KEY_LIST}"),
        ("data.nn=5", f"error: unknown key 'data.nn'; did you mean 'data.n'? {KEY_LIST}"),
        ("colour=red", f"error: unknown key 'colour' {KEY_LIST}"),
        ("backend=jax", "error: backend 'jax' is not one of: numpy, torch"),
        ("-m backend=numpy,jax", "error: backend 'jax' is not one of: numpy, torch"),
        ("experiment=seed_jax", "error: experiment 'seed_jax' is not one of: seed_numpy, seed_torch"),
        ("search=null", "error: search 'null' is not one of: optuna_lr"),
        ("device=cuda", "error: config key 'device': the numpy backend runs on the CPU only; use backend=torch"),
        ("backend=torch device=cuda", "error: config key 'device': device=cuda was asked for, but this torch "),
        ("backend=3", "error: backend '3' is not one of: numpy, torch"),
        ("experiment=1", "error: experiment '1' is not one of: seed_numpy, seed_torch"),
        ("search=optuna_lr hydra.sweeper.n_trials=0", "error: hydra.sweeper.n_trials=0: a search needs at least 1"),
        ("hydra.run.dir=/proc/run", "error: hydra.run.dir=/proc/run: no folder can be made in /proc"),
        ("-m lr=0.1,0.2 hydra.sweep.dir=/proc/sweep", "error: hydra.sweep.dir=/proc/sweep: no folder can be made in"),
    ],
)
def test_cli_refuses_bad_config_in_one_line_before_any_work(command_line, says, tmp_path: Path, new_store_env):
    if "torch device=cuda" in command_line and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = run_cli(*command_line.split(), cwd=tmp_path, env={**new_store_env, "SECRET_X": "hunter2"})
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()  # one line: no traceback, no Hydra advice that leads to another error
    assert line.startswith(says), line
    assert "hunter2" not in line
    assert list(tmp_path.iterdir()) == [], "a run that never started left a store or a folder"


@pytest.mark.slow
def test_a_file_where_the_run_folder_would_go_is_one_line(tmp_path: Path, tracking_env):
    (tmp_path / "taken").write_text("a user's file")
    for folder, says in [("taken", "that is a file, not a folder"), ("taken/run", "no folder can be made in")]:
        done = run_cli(f"hydra.run.dir={tmp_path / folder}", cwd=tmp_path, env=tracking_env)
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line.startswith(f"error: hydra.run.dir={tmp_path / folder}: {says}"), line
    assert (tmp_path / "taken").read_text() == "a user's file"


@pytest.mark.slow
@pytest.mark.parametrize(
    "uri,says",
    [
        ("sqlite://", "is an in-memory SQLite database, which keeps no run"),
        ("file:///tmp/runs", "is a file store (a folder of runs), which this project does not record into"),
        ("./mlruns", "is a file store"),
        ("mysql://user:hunter2@127.0.0.1:3306/runs", "mysql://user:***@127.0.0.1:3306/runs: no database driver"),
    ],
)
def test_a_tracking_uri_runs_cannot_go_to_is_one_line_before_any_work(uri, says, tmp_path: Path, new_store_env):
    for command_line in (["steps=5"], ["-m", "lr=0.001,0.002"]):
        done = run_cli(*command_line, cwd=tmp_path, env={**new_store_env, "MLFLOW_TRACKING_URI": uri})
        assert done.returncode == 1 and done.stdout == ""
        [line] = done.stderr.splitlines()
        assert says in line and line.endswith("or a server (http://...)") and "hunter2" not in line
        assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_values_hydra_settings_read_from_the_environment_reach_nothing_recorded(tmp_path: Path, tracking_env):
    """A run folder named from the environment is used but not published; a config value that takes one
    (through hydra.job.env_set, or the run's folder) is refused. Nothing in the store or its artifacts
    holds the secret, whichever Hydra setting carried it."""
    secret = "hunter2-0c7f"
    env = {**tracking_env, "MY_SECRET": secret, "GPU": "0"}
    ran = [
        ["steps=5", f"hydra.run.dir={tmp_path}/runs/${{oc.env:MY_SECRET}}"],
        ["-m", "lr=0.001,0.002", "steps=5", f"hydra.sweep.dir={tmp_path}/sweeps/${{oc.env:MY_SECRET}}"],
        ["steps=5", "hydra.job.name=${oc.env:MY_SECRET}", f"hydra.run.dir={tmp_path}/named"],
        # a short value ("0") is not looked for: seed=0, lr=0.001 and a dated folder are not refused or hidden
        ["steps=5", "+hydra.job.env_set.CUDA_VISIBLE_DEVICES=${oc.env:GPU}", f"hydra.run.dir={tmp_path}/on-gpu-0"],
    ]
    for command_line in ran:
        done = run_cli(*command_line, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    refused = [
        ["+hydra.job.env_set.X=${oc.env:MY_SECRET}", "experiment_name=${hydra:job.env_set.X}"],
        [f"hydra.run.dir={tmp_path}/runs/${{oc.env:MY_SECRET}}", "experiment_name=${hydra:runtime.output_dir}"],
    ]
    for command_line in refused:
        done = run_cli(*command_line, cwd=tmp_path, env=env)
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line.startswith("error: config key 'experiment_name': its value comes from the environment"), line

    client = MlflowClient(tracking_env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("autograd-fit").experiment_id])
    assert len(runs) == 6  # a run, a sweep's parent and its two jobs, the named run, the one on "GPU 0"
    folders = sorted(str(r.data.tags.get("output_dir")) for r in runs)  # the parent has none
    assert folders == sorted([HIDDEN_FOLDER] * 3 + [str(tmp_path / "named"), str(tmp_path / "on-gpu-0"), "None"])
    recorded = [tmp_path / "mlflow.db", *(p for p in (tmp_path / "mlruns").rglob("*") if p.is_file())]
    assert not [p for p in recorded if secret.encode() in p.read_bytes()]


def test_flatten_joins_nested_keys():
    assert flatten({"lr": 0.1, "data": {"n": 3, "x": {"min": -1}}}) == {
        "lr": 0.1,
        "data.n": 3,
        "data.x.min": -1,
    }
