"""`--help` and the table of keys in docs/config.md come from the schema; presets are chosen without `+`."""

from __future__ import annotations

import shlex

from omegaconf import OmegaConf

from src.config import flatten, load_config
from src.models import quadratic
from src.problem import make_problem
from src.usage import EXAMPLES, GROUPS, check_overrides, keys, markdown_table, schema_keys
from tests.conftest import ROOT, compose_config, run_cli


def test_every_config_key_is_documented():
    cfg = compose_config()
    documented = {k.name for k in keys(cfg)}
    flat = flatten(OmegaConf.to_container(cfg))
    composed = {key.split(".")[0] if key.split(".")[0] in GROUPS else key for key in flat}
    assert documented == composed
    assert all(k.meaning and k.allowed for k in keys(cfg))


def test_the_readme_table_is_the_schemas():
    readme = (ROOT / "docs" / "config.md").read_text()
    start = readme.index("| key | default | allowed | meaning |")
    table = readme[start : readme.index("\n\n", start) + 1]
    assert table == markdown_table(compose_config()), (
        "docs/config.md's table of keys is stale: paste src.usage.markdown_table"
    )


def test_help_shows_the_composed_values_presets_bound_and_examples(tmp_path, tracking_env):
    done = run_cli("experiment=seed_numpy", "lr=0.05", "--help", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    config = load_config(compose_config("experiment=seed_numpy", "lr=0.05"))
    for k in keys(compose_config("experiment=seed_numpy", "lr=0.05")):
        assert f"{k.name} = {k.value}" in text and k.allowed in text
    assert "lr = 0.05" in text and "seed = 100" in text and "rng = legacy_numpy" in text
    bound = quadratic.lr_bound(make_problem(config).x)
    assert f"2/λ_max = {bound:.6g}." in text
    assert "seed_numpy  §2.6 exactly as the book runs it" in text and "optuna_lr" in text
    assert sum(command in text for command, _ in EXAMPLES) == len(EXAMPLES) == 5
    assert not (tmp_path / "outputs").exists() and "MLflow run" not in text  # help only: nothing ran


def test_help_examples_compose():
    for command, _ in EXAMPLES:
        words = shlex.split(command)
        if words[:3] != ["python", "-m", "src.train"] or "-m" in words[3:]:
            continue  # a sweep, or through DVC
        load_config(compose_config(*words[3:]))


def test_presets_are_chosen_without_plus_and_plus_says_so(tmp_path, tracking_env):
    assert load_config(compose_config("experiment=seed_torch")).seed == 100
    done = run_cli("+experiment=seed_numpy", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: '+experiment=seed_numpy': experiment is in conf/config.yaml's defaults list (as null), "
        "so choose it without the '+': experiment=seed_numpy"
    ]


def test_a_refused_config_leaves_no_output_folder(tmp_path, tracking_env):
    kept = run_cli("steps=2", cwd=tmp_path, env=tracking_env)
    assert kept.returncode == 0, kept.stderr
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "outputs").rglob("*"))
    done = run_cli("lr=-1", cwd=tmp_path, env=tracking_env)
    assert done.returncode == 1 and "config key 'lr'" in done.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "outputs").rglob("*")) == before
    alone = tmp_path / "alone"
    alone.mkdir()
    assert run_cli("seed=-1", cwd=alone, env=tracking_env).returncode == 1
    assert list(alone.iterdir()) == []


def test_the_override_check_passes_what_hydra_accepts():
    examples = [shlex.split(c)[3:] for c, _ in EXAMPLES if c.startswith("python -m src.train")]
    others = ["backend=glob(*)", "+extra=1", "~init", "hydra.run.dir=x", "data={n: 5}", "experiment=[seed_numpy]"]
    every_key = [f"{key}=1" for key in schema_keys() if key.split(".")[0] not in GROUPS]
    for command in [*examples, others, every_key]:
        check_overrides([word for word in command if "=" in word])
