"""The evaluate stage's numbers against independent references."""

import numpy as np
import pytest

from src.models import quadratic
from src.stages.evaluate import evaluate


def test_evaluate_against_lstsq_and_direct_formulas():
    rng = np.random.default_rng(5)
    x = np.linspace(-1, 1, 60)
    y = 3 * x**2 + 2 + 0.2 * rng.random(60)
    x_test = np.linspace(-1, 1, 40)
    y_test = 3 * x_test**2 + 2 + 0.2 * rng.random(40)
    w, b = 2.9, 2.2

    m = evaluate(quadratic, x, y, x_test, y_test, w, b, true_w=3.0, true_b=2.0)

    (w_star, b_star), *_ = np.linalg.lstsq(np.column_stack([x**2, np.ones_like(x)]), y, rcond=None)
    assert m["w_star"] == pytest.approx(w_star, rel=1e-12) and m["b_star"] == pytest.approx(b_star, rel=1e-12)
    optimal = 0.5 * np.sum((w_star * x**2 + b_star - y) ** 2)
    train = 0.5 * np.sum((w * x**2 + b - y) ** 2)
    assert m["optimal_loss"] == pytest.approx(optimal, rel=1e-10)
    assert m["loss_gap"] == pytest.approx(train - optimal, rel=1e-10)
    pred = w * x_test**2 + b
    assert m["test_mse"] == pytest.approx(np.mean((pred - y_test) ** 2), rel=1e-12)
    ss_res, ss_tot = np.sum((pred - y_test) ** 2), np.sum((y_test - y_test.mean()) ** 2)
    assert m["test_r2"] == pytest.approx(1 - ss_res / ss_tot, rel=1e-12)
    assert (m["w_gap"], m["b_gap"]) == pytest.approx((abs(w - w_star), abs(b - b_star)))
    assert (m["w_error"], m["b_error"]) == pytest.approx((0.1, 0.2))


def test_the_optimum_scores_no_gap():
    x = np.linspace(-2, 1, 30)
    y = np.cos(x)  # not even of the model's form
    (w_star, b_star), *_ = np.linalg.lstsq(np.column_stack([x**2, np.ones_like(x)]), y, rcond=None)
    m = evaluate(quadratic, x, y, x, y, w_star, b_star, true_w=0.0, true_b=0.0)
    assert abs(m["loss_gap"]) < 1e-12


def test_an_empty_training_history_is_named(tmp_path):
    from src.errors import DataFileError
    from src.stages.evaluate import _read_loss

    (tmp_path / "history.csv").write_text("step,loss,w,b\n")
    with pytest.raises(DataFileError, match="no steps in the training history"):
        _read_loss(tmp_path / "history.csv")


def test_data_too_large_for_float64_is_named():
    from src.models.quadratic import lr_bound

    with pytest.raises(ValueError, match="too large for float64"):
        lr_bound(np.array([1e308, 0.5, -1.0]))


def test_singular_training_data_is_named():
    from src.errors import DataFileError

    x = np.array([-1.0, 1.0])  # data.n=2 on [-1, 1]: one x², so w and b trade off
    with pytest.raises(DataFileError, match="the optimum is not unique"):
        evaluate(quadratic, x, np.array([1.0, 1.0]), x, np.array([1.0, 1.0]), 1.0, 0.0, 1.0, 0.0)


@pytest.mark.slow
def test_a_model_no_run_made_writes_nothing(tmp_path, tracking_env):
    import subprocess
    import sys

    from src import datafiles
    from tests.conftest import ROOT

    datafiles.write_xy(tmp_path / "train.csv", np.linspace(-1, 1, 10), np.linspace(0, 3, 10))
    datafiles.write_json(tmp_path / "models" / "fit.json", {"w": 3.0, "b": 2.0, "final_loss": 0.1})
    (tmp_path / "models" / "history.csv").write_text("step,loss,w,b\n0,1,2,3\n")
    command = [sys.executable, "-m", "src.stages.evaluate", "--params", str(ROOT / "params.yaml"),
               "--train", "train.csv", "--test", "train.csv", "--model", "models", "--metrics", "metrics.json",
               "--details", "details.json", "--plots", "eval"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=tracking_env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "error: models/fit.json: no run in MLflow experiment 'autograd-fit'" in done.stderr
    assert not any((tmp_path / name).exists() for name in ("metrics.json", "details.json", "eval"))
