"""DVC stage `generate`: the training set, a held-out test set, and the starting (w, b)."""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import argparse
import logging

from src import datafiles, problem
from src.config import TrainConfig
from src.problem import make_problem, make_test_set
from src.stages import load_params, stage_errors

log = logging.getLogger(__name__)


def generate(config: TrainConfig) -> tuple[problem.Problem, tuple]:
    """The training problem exactly as `python -m src.train` draws it, and the test set beside it."""
    return make_problem(config), make_test_set(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="CSV to write the training set to")
    parser.add_argument("--test", required=True, help="CSV to write the test set to")
    parser.add_argument("--start", required=True, help="JSON to write the initial w0, b0 to")
    args = parser.parse_args(argv)
    with stage_errors():
        config, _ = load_params(args.params)
        (x, y, w0, b0), (x_test, y_test) = generate(config)
        datafiles.write_xy(args.train, x, y)
        datafiles.write_xy(args.test, x_test, y_test)
        datafiles.write_json(args.start, {"w0": w0, "b0": b0})
        log.info("wrote %d training and %d test points", len(x), len(x_test))


if __name__ == "__main__":
    main()
