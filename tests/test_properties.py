"""Property-based: over valid configs, training never crashes; it converges below the stability
bound, and otherwise converges or reports divergence."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.config import load_config
from src.models import quadratic
from src.problem import make_problem
from tests.conftest import backend_module, book_fit, compose_config

configs = st.fixed_dictionaries(
    {
        "backend": st.sampled_from(["numpy", "torch"]),
        "dtype": st.sampled_from(["float32", "float64"]),
        "seed": st.integers(0, 2**31 - 1),
        "steps": st.integers(1, 300),
        "data.n": st.integers(2, 400),
        "data.noise": st.floats(0, 5),
        "data.true_w": st.floats(-10, 10),
        "data.true_b": st.floats(-10, 10),
        "data.x_min": st.floats(-3, 0.9),
        "init.w": st.sampled_from(["uniform", "normal", "zeros"]),
        "init.b": st.sampled_from(["uniform", "normal", "zeros"]),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=configs, width=st.floats(0.1, 3), lr_over_bound=st.floats(0.01, 3))
def test_training_converges_below_the_bound_and_otherwise_reports(overrides, width, lr_over_bound):
    overrides["data.x_max"] = overrides["data.x_min"] + width
    config = load_config(compose_config("device=cpu", *(f"{k}={v}" for k, v in overrides.items())))
    x, y, w0, b0 = make_problem(config)
    bound = quadratic.lr_bound(x)
    lr = lr_over_bound * bound
    backend = config.backend.name
    history = book_fit(
        backend, x, y, w0, b0, lr=lr, steps=config.steps, device=backend_module(backend).resolve_device("cpu")
    )

    assert np.isfinite(history.loss).all() and np.isfinite(history.w).all() and np.isfinite(history.b).all()
    if history.diverged:
        assert lr_over_bound > 1, "diverged below the stability bound"
    else:
        assert len(history.loss) == config.steps
    if lr_over_bound < 0.95:  # clear of the bound, so rounding cannot push it across
        assert not history.diverged
        # Below 2/λ_max, each gradient step lowers this quadratic loss, up to rounding: relative to
        # the loss, and, as the loss nears 0, relative to the size of the terms it sums (Σy²).
        tolerance = 1e-4 if config.dtype.value == "float32" else 1e-10
        scale = np.finfo(y.dtype).eps * float(np.sum(y.astype(np.float64) ** 2))
        loss = history.loss.astype(np.float64)
        assert np.all(np.diff(loss) <= tolerance * np.abs(loss[:-1]) + scale)
