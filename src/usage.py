"""`python -m src.train --help`, and docs/config.md's table of config keys.

Both are generated here from one source: each key's meaning and allowed range are the field
docs of the schema (src/config.py), its value is the composed config, and each preset's
description is the first comment line of its file under conf/.
"""

from __future__ import annotations

import dataclasses
import difflib
import textwrap
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from src import models
from src.config import TrainConfig, load_config
from src.errors import ConfigError, UserError
from src.problem import make_problem

CONF = Path(__file__).resolve().parent.parent / "conf"

EXAMPLES = (
    ("python -m src.train backend=torch lr=0.005", "autograd (§2.7), a larger step"),
    ("python -m src.train experiment=seed_numpy", "§2.6 exactly as the book runs it"),
    ("python -m src.train -m backend=numpy,torch lr=0.001,0.005,0.01", "a sweep: 6 runs under one parent run"),
    ("python -m src.train search=optuna_lr", "Optuna searches lr; the best model is registered"),
    ("dvc exp run -S lr=0.01", "the same through the DVC pipeline, as an experiment"),
)


class Key(NamedTuple):
    name: str  # as typed on the command line: lr, data.n, backend
    value: str
    allowed: str
    meaning: str


def keys(cfg: DictConfig, schema: type = TrainConfig, prefix: str = "") -> list[Key]:
    """Every config key of `schema`, with its value in `cfg` and its documentation."""
    rows = []
    types = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        name, kind = f"{prefix}{field.name}", types[field.name]
        if "meaning" not in field.metadata:  # a section (data, init): its keys are documented one by one
            rows += keys(cfg, kind, prefix=f"{name}.")
            continue
        if dataclasses.is_dataclass(kind):  # a config group (model, backend): chosen by name, from conf/<group>/
            value, allowed = OmegaConf.select(cfg, f"{name}.name"), " | ".join(sorted(preset_descriptions(name)))
        else:
            value = OmegaConf.select(cfg, name)
            allowed = " | ".join(m.value for m in kind) if issubclass(kind, Enum) else field.metadata["allowed"]
        rows.append(Key(name, str(value), allowed, field.metadata["meaning"]))
    return rows


def preset_descriptions(group: str) -> dict[str, str]:
    """{option: the first comment line of conf/<group>/<option>.yaml, up to its first colon}."""
    descriptions = {}
    for path in sorted((CONF / group).glob("*.yaml")):
        comments = [line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")]
        first = next((c for c in comments if not c.startswith("@package")), "")
        descriptions[path.stem] = first.split(":", 1)[0]
    return descriptions


def options(group: str) -> dict[str, str]:
    """{option: its module} for the model or backend group: conf/<group>/*.yaml, each naming a module."""
    return {path.stem: OmegaConf.load(path).module for path in sorted((CONF / group).glob("*.yaml"))}


def preset(group: str, option: str) -> DictConfig:
    """conf/<group>/<option>.yaml as written, uncomposed; empty for `null` or an option with no file."""
    path = CONF / group / f"{option}.yaml"
    return OmegaConf.load(path) if path.is_file() else OmegaConf.create()


def markdown_table(cfg: DictConfig) -> str:
    """docs/config.md's table of keys."""
    lines = ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for k in keys(cfg):
        allowed = k.allowed.replace("|", r"\|")  # a bare | would end the cell
        lines.append(f"| `{k.name}` | `{k.value}` | {allowed} | {k.meaning} |")
    return "\n".join(lines) + "\n"


def _stability(cfg: DictConfig) -> str:
    try:
        config = load_config(cfg)
        bound = models.lr_bound(models.load(config.model.module), make_problem(config).x)
        bound = "none stated by the model" if bound is None else f"{bound:.6g}"
    except UserError as e:
        bound = f"not computed: {e}"
    return (
        "The loss is a sum over the points, so gradient descent is stable only for lr < 2/λ_max(H),\n"
        "H the loss's Hessian in (w, b) (the model's lr_bound). A run at or above the bound warns before it\n"
        "starts; a loss that rises stops it, recorded as FAILED, naming the step and the bound.\n"
        f"For the data this config draws: 2/λ_max = {bound}."
    )


def help_text(cfg: DictConfig) -> str:
    """What `python -m src.train [overrides] --help` prints, for the config those overrides compose."""
    rows = keys(cfg)
    name_width = max(len(k.name) + len(k.value) for k in rows) + 3

    def entries(pairs) -> list[str]:
        width = max(len(a) for a, _ in pairs) + 2
        return [f"  {a:<{width}}{b}" for a, b in pairs]

    lines = [
        "python -m src.train [key=value ...]",
        "Fit a model (the book's, by default) by gradient descent (numpy or torch) and record the run in MLflow.",
        "",
        "Keys (key = value as composed now; allowed values; meaning):",
    ]
    for k in rows:
        lines.append(f"  {k.name + ' = ' + k.value:<{name_width}}  {k.allowed}")
        lines += textwrap.wrap(k.meaning, width=96, initial_indent="      ", subsequent_indent="      ")
    lines += ["", "Presets (experiment=<name>; they override the keys above):"]
    lines += entries(list(preset_descriptions("experiment").items()))
    lines += ["", "Searches (search=<name>; a multirun):"]
    lines += entries(list(preset_descriptions("search").items()))
    lines += ["", "Launchers (-m hydra/launcher=<name>): basic (one job after another), joblib (in parallel here),"]
    launchers = preset_descriptions("hydra/launcher").items()
    lines += ["  " + ", ".join(f"{name} ({what[:1].lower()}{what[1:]})" for name, what in launchers)]
    lines += ["", "Step size:", *("  " + line for line in _stability(cfg).splitlines())]
    lines += ["", "Examples:", *entries(EXAMPLES)]
    lines += ["", "Browse the runs: make ui.  Hydra's own flags: python -m src.train --hydra-help", ""]
    return "\n".join(lines).replace("$", "$$")  # Hydra fills the template with string.Template


# The config groups, chosen by name (backend=torch): the folders of conf/, but Hydra's own.
GROUPS = tuple(sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"))
HELP = "python -m src.train --help lists every key"


def schema_keys(schema: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every key a config of `schema` has, sections included: backend, backend.name, data, data.n, ..."""
    names = []
    for field in dataclasses.fields(schema):
        name, kind = f"{prefix}{field.name}", typing.get_type_hints(schema)[field.name]
        names.append(name)
        if dataclasses.is_dataclass(kind):
            names += schema_keys(kind, prefix=f"{name}.")
    return names


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse, in one line that names the fix, an override of a key the schema lacks or of a group
    option that conf/ lacks. Hydra's own messages for these run to several lines, and its advice
    for an unknown key (`To append to your config use +lrr=0.1`) leads to another error. Additions
    (`+key=...`), deletions and Hydra's own keys are left to Hydra; so is what it cannot parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType, ValueType
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except HydraException:
            continue
        key = override.key_or_group
        if override.type is not OverrideType.CHANGE or override.package is not None or key.startswith("hydra"):
            continue
        if key in GROUPS:
            if override.value_type is ValueType.GLOB_CHOICE_SWEEP:
                continue
            options = sorted(preset_descriptions(key))
            chosen = list(override.sweep_string_iterator()) if override.is_sweep_override() else override.value()
            chosen = chosen if isinstance(chosen, list) else [chosen]  # experiment=[a,b] takes both
            for choice in ("null" if c is None else str(c) for c in chosen):
                if choice not in options:
                    raise ConfigError(f"{key} '{choice}' is not one of: {', '.join(options)}")
        elif key not in (known := schema_keys()):
            close = difflib.get_close_matches(key, known, n=1)
            guess = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown key '{key}'{guess} ({HELP})")
