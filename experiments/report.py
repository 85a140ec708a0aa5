"""How an experiment leaves its results: report.json, report.md and PNGs in a folder, and one
MLflow run in an MLflow experiment named after it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from numbers import Real
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from src import datafiles, plots, tracking
from src.config import flatten

log = logging.getLogger(__name__)


def record(name: str, cfg, report: Mapping, figures: Mapping[str, Figure], backend: str) -> str:
    """Write `report` and `figures` to the Hydra run's folder and log them, with the config `cfg`
    as params, to MLflow; return the run id. The report's top-level numbers become the run's metrics."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    params = OmegaConf.to_container(cfg)
    datafiles.write_json(output_dir / "report.json", dict(report))
    datafiles.write_text(output_dir / "report.md", _markdown(name, report))
    for filename, figure in figures.items():
        plots.save(figure, output_dir / filename)

    uri = tracking.tracking_uri()
    client, experiment_id = tracking.open_experiment(uri, name)
    tags = tracking.run_tags(backend=backend, device="cpu")
    with tracking.store_errors(uri), tracking.tracked_run(experiment_id, name, tags) as run_id:
        numbers = {k: v for k, v in report.items() if isinstance(v, Real) and not isinstance(v, bool)}
        tracking.log_params_and_history(client, run_id, flatten(params), history={}, final=numbers)
        for filename in ("report.json", "report.md", *figures):
            client.log_artifact(run_id, str(output_dir / filename))
    log.info("%s: report in %s, MLflow run %s in experiment '%s'", name, output_dir / "report.md", run_id, name)
    log.info("run page: %s", tracking.run_link(run_id, experiment_id))
    return run_id


def _markdown(name: str, report: Mapping) -> str:
    lines = [f"# {name}", "", "| quantity | value |", "| --- | --- |"]
    for key, value in flatten(report).items():
        lines.append(f"| {key} | {json.dumps(value) if not isinstance(value, str) else value} |")
    return "\n".join(lines) + "\n"
