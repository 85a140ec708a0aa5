"""Values read from the environment stay out of what a run publishes: every config value is logged to
MLflow and saved with the run, so a value taken from the environment (a token, a password) is refused,
and a run folder whose path holds one is not named in the run's tags."""

import os
import re
from collections.abc import Mapping

from src.errors import ConfigError

# Resolvers that read the process environment. Every config value is logged to MLflow and saved
# with the run, so a value taken from the environment (a token, a password) would be published.
_READS_ENVIRONMENT = re.compile(r"\$\{\s*(oc\.env|env)\s*:\s*([A-Za-z_][A-Za-z0-9_]*)?")


# Values read from the environment shorter than this are not looked for: "0" (a GPU index, say) turns
# up by chance in numbers, seeds and dates, while a token or a password is longer.
SHORTEST_SECRET = 6


def read_by_hydra(raw: Mapping[str, object]) -> set[str]:
    """The values that Hydra's own settings (`raw`: flattened, unresolved) read from the environment
    (`hydra.run.dir=${oc.env:X}/...`, `hydra.job.env_set.Y=${oc.env:X}`), of SHORTEST_SECRET characters
    or more: they may shape a run (its folder) but must not be published."""
    names = {m.group(2) for v in raw.values() if isinstance(v, str) for m in _READS_ENVIRONMENT.finditer(v)}
    return {os.environ[name] for name in names if name and len(os.environ.get(name, "")) >= SHORTEST_SECRET}


def holds(text: str, hidden: set[str] | frozenset[str]) -> bool:
    """Whether `text` holds one of `hidden`, the values `read_by_hydra` found."""
    return any(secret in text for secret in hidden)


def refuse_held(resolved: Mapping[str, object], hidden: set[str] | frozenset[str]) -> None:
    """Raise ConfigError naming the first key of the config (`resolved`: flattened) whose value holds one
    of `hidden` (values read from the environment, reaching the config through Hydra:
    `experiment_name=${hydra:job.env_set.Y}`)."""
    for key, value in resolved.items():
        if holds(str(value), hidden):
            raise ConfigError(
                f"config key '{key}': its value comes from the environment (through a Hydra setting that reads "
                "it), which a run's config may not: every value is logged to MLflow; write the value itself"
            )


def refuse_in(raw: Mapping[str, object]) -> None:
    """Raise ConfigError naming the first key of the config (`raw`: flattened, unresolved) whose value is
    read from the environment (`${oc.env:...}`)."""
    for key, value in raw.items():
        if isinstance(value, str) and _READS_ENVIRONMENT.search(value):
            raise ConfigError(
                f"config key '{key}': {value} reads the environment, which a run's config may not: every value "
                "is logged to MLflow and saved with the run; write the value itself, or keep it out of the config"
            )
