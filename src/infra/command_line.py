"""The command line, checked before Hydra starts: unknown keys and group options, `+` on a preset, a
store or run folder that cannot be used, an impossible search. Hydra's own messages for these run to
several lines, or give advice that fails."""

from __future__ import annotations

import sys
from pathlib import Path

from src import run_folders, stores, sweep, usage
from src.errors import ConfigError
from src.infra import store_access
from src.usage import CONF


def check(argv: list[str]) -> None:
    """Refuse, before Hydra starts, the overrides it would refuse in several lines or with advice that
    fails: unknown keys and group options, and `+` on a preset. Skipped for another primary config."""
    if any(arg.startswith(("-cn", "-cd", "-cp", "--config")) for arg in argv):
        return
    refuse_plus_on_presets(argv)
    overrides = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    usage.check_overrides(overrides)
    if {"--help", "-h"} & set(argv):
        print_help(overrides)
    store_access.check_uri(stores.tracking_uri())
    given = dict(override.split("=", 1) for override in overrides)
    folder_key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(argv) or "search" in given else "hydra.run.dir"
    folder = given.get(folder_key, "outputs" if folder_key == "hydra.run.dir" else "multirun")  # Hydra's, in cwd
    if "${" not in folder:  # an interpolation is resolved by Hydra
        run_folders.check_can_make(Path(folder).absolute(), folder_key)
    trials = given.get("hydra.sweeper.n_trials", "1")
    if trials.lstrip("-").isdigit() and int(trials) < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={trials}: a search needs at least 1 trial")
    sweeper = usage.preset("search", given.get("search", "null")).get("hydra", {}).get("sweeper", {})
    if "storage" in sweeper:  # an Optuna search, which keeps its study in a database
        storage = given.get("hydra.sweeper.storage", sweeper.storage) or "null"
        if "${" not in storage:
            sweep.check_study_storage(sweep.study_storage() if storage == "null" else storage)


def refuse_plus_on_presets(overrides: list[str]) -> None:
    """`+experiment=x` fails inside Hydra with a message about 'override'; say what to type instead."""
    for override in overrides:
        group = override.lstrip("+").split("=", 1)[0]
        if override.startswith("+") and group in ("experiment", "search"):
            raise ConfigError(
                f"'{override}': {group} is in conf/config.yaml's defaults list (as null), "
                f"so choose it without the '+': {override.lstrip('+')}"
            )


def print_help(overrides: list[str]) -> None:
    """`python -m src.train [overrides] --help`: every key with its value in the config those overrides
    compose, its allowed values and its meaning (src/usage.py); then exit, as Hydra's --help does."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    print(usage.help_text(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    sys.exit(0)
