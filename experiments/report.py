"""How an experiment leaves its results: report.json (every value, full precision), report.md (a
one-line conclusion and a short table of findings) and PNGs in a folder, one MLflow run in an
MLflow experiment named after it, and the same table on the console."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from src import datafiles, plots, stores
from src import record as run_record
from src.config import flatten
from src.infra import lifecycle, store_access

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Findings:
    """What an experiment found, for a reader: a one-line conclusion and a small table of text cells
    (numbers already formatted, lists already summarised). The first column names each row."""

    conclusion: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


def significant(value: float, digits: int) -> str:
    """`value` to `digits` significant digits: 0.018000000000000002 -> '0.018' at 4."""
    return f"{value:.{digits}g}"


def numbers(values: Iterable[float], digits: int) -> str:
    """A short list, each to `digits` significant digits: '[6, 9]'."""
    return "[" + ", ".join(significant(v, digits) for v in values) + "]"


def conclude(claim: str, measured: str, checks: Mapping[str, bool]) -> str:
    """One line: the claim, what was measured, and whether every check of one against the other held."""
    failed = [name for name, held in checks.items() if not held]
    verdict = "agrees" if not failed else "differs: not " + "; not ".join(failed)
    return f"{claim}; measured: {measured}; {verdict}."


def markdown(name: str, findings: Findings) -> str:
    """report.md: a title, the conclusion, and the table of findings."""
    lines = [f"# {name}", "", f"**Conclusion.** {findings.conclusion}", "", _markdown_row(findings.header),
             "|" + " --- |" * len(findings.header)]  # fmt: skip
    lines += [_markdown_row(row) for row in findings.rows]
    lines += ["", "Every value, at full precision: `report.json`."]
    return "\n".join(lines) + "\n"


def console_table(findings: Findings) -> str:
    """The findings as aligned columns under a ruled header, for a terminal."""
    table = [findings.header, *findings.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(findings.header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(findings.header), line(["-" * w for w in widths]), *(line(row) for row in findings.rows)])


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def record(name: str, cfg, report: Mapping, findings: Findings, figures: Mapping[str, Figure], backend: str) -> str:
    """Write `report`, `findings` and `figures` to the Hydra run's folder and log them, with the
    config `cfg` as params, to MLflow; print the findings; return the run id. The report's
    top-level numbers become the run's metrics."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    params = OmegaConf.to_container(cfg)
    datafiles.write_json(output_dir / "report.json", dict(report))
    datafiles.write_text(output_dir / "report.md", markdown(name, findings))
    for filename, figure in figures.items():
        plots.save(figure, output_dir / filename)

    uri = stores.tracking_uri()
    client, experiment_id = store_access.open_experiment(uri, name)
    tags = run_record.run_tags(backend=backend, device="cpu")
    with store_access.store_errors(uri), lifecycle.tracked_run(experiment_id, name, tags) as run_id:
        metrics = {k: v for k, v in report.items() if isinstance(v, Real) and not isinstance(v, bool)}
        run_record.log_params_and_history(client, run_id, flatten(params), history={}, final=run_record.scores(metrics))
        for filename in ("report.json", "report.md", *figures):
            client.log_artifact(run_id, str(output_dir / filename))
    log.info("%s: MLflow run %s in experiment '%s'", name, run_id, name)
    log.info("run page: %s", run_record.run_link(run_id, experiment_id))
    print(f"\n{name}: {findings.conclusion}\n\n{console_table(findings)}\n\nreport: {output_dir / 'report.md'}")
    return run_id
