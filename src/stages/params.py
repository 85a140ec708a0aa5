"""DVC stage `params`: keep `params.yaml`, which every other stage reads, in step with `conf/`.

DVC composes `conf/` into `params.yaml` only for `dvc exp run`; a plain `dvc repro` reads
whatever `params.yaml` holds. This stage comes first and runs whenever `conf/` or
`params.yaml` changed since the last run. It settles which of the two holds the values:

- under `dvc exp run`, DVC has just composed `params.yaml` from `conf/` and the `-S`
  overrides: it is used as it is;
- `conf/` edited, `params.yaml` as committed: `params.yaml` is stale, and is composed
  afresh from `conf/`; the keys that change are printed;
- `params.yaml` changed (by `dvc exp apply`, a finished `dvc exp run`, or by hand), `conf/`
  as committed: its values are deliberate; they are used, and the keys that differ from
  `conf/` are printed;
- both changed, and they disagree: the stage stops before any other stage runs, naming
  the keys and the commands that settle it.

Git tells "as committed" from "changed". `--reset` composes `params.yaml` from `conf/` on
purpose (`make params`), printing the values it replaces; `--check` only says which differ
(`make run` ends with it).
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import argparse
import logging
import os
import subprocess
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from src import datafiles
from src.config import flatten
from src.errors import ConfigError
from src.infra.env_values import refuse_in
from src.stages import load_params, stage_errors

log = logging.getLogger(__name__)


def compose(conf_dir: Path) -> str:
    """`conf/config.yaml` composed and resolved, as the YAML text that `dvc exp run` writes."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(Path(conf_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config")
    refuse_in(
        flatten(OmegaConf.to_container(cfg, resolve=False))
    )  # before resolving: the value itself never reaches params.yaml
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def differences(params: dict, conf: dict) -> list[str]:
    """'key (params.yaml A, conf/ B)' for every key whose value differs, in key order."""
    a, b = flatten(params), flatten(conf)
    missing = object()
    return [
        f"{key} (params.yaml {a.get(key, 'unset')}, conf/ {b.get(key, 'unset')})"
        for key in sorted(a.keys() | b.keys())
        if a.get(key, missing) != b.get(key, missing)
    ]


def _differences_from(params_path: Path, composed: str) -> list[str]:
    """`differences` between the params file (empty when missing or not a mapping) and `composed`."""
    current = yaml.safe_load(params_path.read_text()) if params_path.is_file() else {}
    return differences(current if isinstance(current, dict) else {}, yaml.safe_load(composed))


def changed_since_commit(path: Path) -> bool | None:
    """Whether `path` differs from git's HEAD (untracked files count); None outside a git repository."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return bool(done.stdout.strip())


def reconcile(params_path: Path, conf_dir: Path, in_experiment: bool) -> str:
    """Bring `params_path` in step with `conf_dir` (see the module's doc); return what was done.

    Raises ConfigError when both changed and disagree.
    """
    composed = compose(conf_dir)
    if not params_path.is_file():
        datafiles.write_text(params_path, composed)
        return f"{params_path}: composed from {conf_dir}/"
    differ = _differences_from(params_path, composed)
    if not differ:
        return f"{params_path}: in step with {conf_dir}/"
    if in_experiment:
        return f"{params_path}: as `dvc exp run` composed it: {'; '.join(differ)}"
    conf_changed, params_changed = changed_since_commit(conf_dir), changed_since_commit(params_path)
    if params_changed is False:
        datafiles.write_text(params_path, composed)
        return f"{params_path}: recomposed from the edited {conf_dir}/: {'; '.join(differ)}"
    if conf_changed is False:
        return f"{params_path}: keeps its own values, which differ from {conf_dir}/: {'; '.join(differ)}"
    raise ConfigError(
        f"{params_path} and {conf_dir}/ both changed and disagree on {'; '.join(differ)}; "
        f"run `make params` to take {conf_dir}/ (dropping params.yaml's values), "
        f"or `dvc exp run -S key=value` to compose {conf_dir}/ with the values to keep"
    )


def reset(params_path: Path, conf_dir: Path) -> str:
    """Compose `params_path` from `conf_dir`, whatever it held; return what changed."""
    composed = compose(conf_dir)
    differ = _differences_from(params_path, composed)
    datafiles.write_text(params_path, composed)
    return f"{params_path}: composed from {conf_dir}/" + (f", replacing {'; '.join(differ)}" if differ else "")


def check(params_path: Path, conf_dir: Path) -> str | None:
    """A line saying which values of `params_path` differ from `conf_dir`, or None when none do."""
    differ = _differences_from(params_path, compose(conf_dir))
    if not differ:
        return None
    return (f"{params_path} keeps values that differ from {conf_dir}/: {'; '.join(differ)} "
            f"(`make params` takes {conf_dir}/ instead)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--conf", default="conf", type=Path)
    parser.add_argument("--reset", action="store_true", help="compose params.yaml from conf/, replacing its values")
    parser.add_argument("--check", action="store_true", help="say which values of params.yaml differ from conf/")
    args = parser.parse_args(argv)
    with stage_errors():
        if args.check:
            if note := check(args.params, args.conf):
                log.info("%s", note)
            return
        if args.reset:
            log.info("%s", reset(args.params, args.conf))
        else:
            log.info("%s", reconcile(args.params, args.conf, in_experiment="DVC_EXP_NAME" in os.environ))
        load_params(args.params)  # the schema's one-line error, before any other stage runs


if __name__ == "__main__":
    main()
