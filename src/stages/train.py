"""DVC stage `train`: fit the generated training set and record the run in MLflow.

Besides the files that every training run writes, it leaves `fit.json` (w, b and the final
loss). Everything in `models/` is a pure function of the data and the params, so the same
inputs give the same bytes; the MLflow run id, new on every run, stays out of it. The run is
tagged with the digest of `fit.json` instead (`model_md5`), which is how `evaluate` finds it.
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import argparse
import os
from pathlib import Path

from src import datafiles, problem, record, registry, stores
from src.infra import store_access
from src.stages import MODEL_TAG, load_params, stage_errors
from src.train import log_summary, train


def provenance(train_csv: Path) -> dict[str, str]:
    """Tags that tie the run to its data file and, when there is one, to its DVC experiment."""
    tags = {"data_md5": datafiles.md5(train_csv)}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_STAGE"):
        tags["dvc_stage"] = os.environ["DVC_STAGE"]
    return tags


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="the training CSV from `generate`")
    parser.add_argument("--test", required=True, help="the held-out CSV from `generate`, which scores the model")
    parser.add_argument("--start", required=True, help="the initial w0, b0 from `generate`")
    parser.add_argument("--out", required=True, help="folder for the model and the run's files")
    args = parser.parse_args(argv)
    with stage_errors():
        config, resolved = load_params(args.params)
        x, y = datafiles.read_xy(args.train)
        x_test, y_test = datafiles.read_xy(args.test)
        start = datafiles.read_json(args.start, numbers=("w0", "b0"))
        dtype = config.dtype.value
        data = problem.Problem(x.astype(dtype), y.astype(dtype), float(start["w0"]), float(start["b0"]))
        out = Path(args.out)
        held_out = x_test.astype(dtype), y_test.astype(dtype)
        result = train(
            config,
            resolved,
            data,
            out,
            provenance(args.train),
            data_source=args.train,
            held_out=held_out,
            held_out_source=args.test,
        )
        datafiles.write_json(out / "fit.json", {"w": result.w, "b": result.b, "final_loss": result.loss})
        log_summary(result, config.experiment_name)
        with store_access.store_errors(stores.tracking_uri()):
            record.current_client().set_tag(result.run_id, MODEL_TAG, datafiles.md5(out / "fit.json"))
            registry.register_model(result.run_id, config.experiment_name)


if __name__ == "__main__":
    main()
