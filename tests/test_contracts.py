"""What every backend keeps with every model, for each registered in conf/backend/ and conf/model/:
the History's shape, convergence, agreement with the numpy backend, divergence stopped, no
tracking calls. A new backend or model is checked here without a line added."""

from __future__ import annotations

import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from src import backends, models, usage
from src.backends import BrokenBackend, History, checked_fit
from src.problem import sample_problem
from tests.conftest import ROOT

BACKENDS = usage.options("backend")
MODELS = usage.options("model")
PAIRS = [(backend, model) for backend in BACKENDS for model in MODELS]


def _problem(model, n=50, dtype="float64"):
    return sample_problem(
        model, stream="generator", seed=2, n=n, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="normal", init_b="normal", dtype=dtype,
    )  # fmt: skip


def _fit(backend: str, model: str, steps: int, lr: float, **options) -> History:
    formula = models.load(MODELS[model])
    x, y, w0, b0 = _problem(formula)
    return checked_fit(backends.load(BACKENDS[backend]), formula, x, y, w0, b0, lr=lr, steps=steps, **options)


@pytest.mark.parametrize("backend,model", PAIRS)
@pytest.mark.parametrize("every", [1, 7])
def test_a_history_keeps_every_kth_step_and_the_last(backend, model, every):
    history = _fit(backend, model, steps=50, lr=0.005, every=every)
    assert list(history.step) == sorted({*range(0, 50, every), 49})
    assert history.loss.dtype == history.w.dtype == history.b.dtype == np.float64 and not history.diverged


@pytest.mark.parametrize("backend,model", PAIRS)
def test_a_fit_converges_and_agrees_with_the_numpy_backend(backend, model):
    history = _fit(backend, model, steps=3000, lr=0.01)
    reference = _fit("numpy", model, steps=3000, lr=0.01)
    # below the stability bound, every step lowers the loss, bar rounding once it has converged
    assert np.all(np.diff(history.loss) <= 1e-12 * history.loss[:-1]) and not history.diverged
    assert history.w[-1] == pytest.approx(reference.w[-1], rel=1e-9)
    assert history.b[-1] == pytest.approx(reference.b[-1], rel=1e-9)
    formula = models.load(MODELS[model])
    x, y, _, _ = _problem(formula)
    if (optimum := models.optimum(formula, x, y)) is not None:
        assert (history.w[-1], history.b[-1]) == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize("backend,model", PAIRS)
def test_a_divergence_is_stopped_and_reported(backend, model):
    history = _fit(backend, model, steps=5000, lr=0.5)
    assert history.diverged and len(history.step) < 100
    assert np.isfinite(history.loss).all() and np.all(np.diff(history.loss) > 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backend_makes_no_tracking_calls(backend):
    """Fitting imports neither MLflow nor anything that records: the caller logs the history."""
    script = (
        "import sys; from src import backends, models, problem; "
        f"m = models.load({next(iter(MODELS.values()))!r}); "
        "x, y, w0, b0 = problem.sample_problem(m, stream='generator', seed=0, n=20, noise=0.2, true_w=3.0, "
        "true_b=2.0, x_min=-1.0, x_max=1.0, init_w='uniform', init_b='uniform', dtype='float64'); "
        f"backends.checked_fit(backends.load({BACKENDS[backend]!r}), m, x, y, w0, b0, lr=0.001, steps=20); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('mlflow', 'src') and n.startswith(('mlflow', "
        "'src.record', 'src.registry', 'src.infra.lifecycle', 'src.infra.store_access', 'src.train', 'src.sweep', "
        "'src.plots'))))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _backend_whose_fit_returns(history_of):
    return SimpleNamespace(__name__="tests.broken", fit=lambda model, x, y, w0, b0, **options: history_of(x, y))


def test_a_backend_that_misses_a_divergence_has_it_reported_anyway():
    """A backend that runs on through a rising loss (no rise check of its own) ends diverged, its history
    cut at the last step whose loss was still falling: never a finished fit at a loss of 1e158."""
    formula = models.load(MODELS["quadratic"])
    x, y, w0, b0 = _problem(formula)
    numpy_gd = backends.load(BACKENDS["numpy"])

    def runs_on(x, y):
        kept = numpy_gd.fit(formula, x, y, w0, b0, lr=0.001, steps=10)
        rising = History(np.arange(20), np.r_[kept.loss, kept.loss[-1] * 10.0 ** np.arange(1, 11)],
                         np.r_[kept.w, np.zeros(10)], np.r_[kept.b, np.zeros(10)], diverged=False)  # fmt: skip
        return rising

    history = checked_fit(_backend_whose_fit_returns(runs_on), formula, x, y, w0, b0, lr=0.001, steps=20)
    assert history.diverged and list(history.step) == list(range(10))


@pytest.mark.parametrize(
    "returned,says",
    [
        (lambda x, y: (x, y), "returned a tuple, not a History"),
        (lambda x, y: History(np.arange(3), np.ones(3), np.ones(2), np.ones(3), False), "differ in length"),
        (lambda x, y: History(np.array([0, 2, 1]), np.ones(3), np.ones(3), np.ones(3), False), "not increasing"),
    ],
)
def test_a_backend_that_breaks_the_contract_fails_with_a_clear_error(returned, says):
    formula = models.load(MODELS["quadratic"])
    x, y, w0, b0 = _problem(formula)
    with pytest.raises(BrokenBackend, match=says):
        checked_fit(_backend_whose_fit_returns(returned), formula, x, y, w0, b0, lr=0.001, steps=3)


@pytest.mark.parametrize(
    "load,module,says",
    [
        (models.load, "src.models.nonexistent", "model module 'src.models.nonexistent' cannot be imported"),
        (models.load, "math", "model module 'math' lacks FORMULA, features, predict, loss_and_grad; see src/models/"),
        (backends.load, "src.backends.nonexistent", "backend module 'src.backends.nonexistent' cannot be imported"),
        (backends.load, "math", "backend module 'math' lacks fit, resolve_device, STEP_COST; see src/backends/"),
    ],
)
def test_a_module_that_is_not_a_model_or_backend_is_refused_naming_what_it_lacks(load, module, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        load(module)
