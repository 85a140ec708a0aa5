"""The torch backend on a GPU. Skipped where torch sees no usable cuda device."""

import functools

import numpy as np
import pytest
import torch

from src.models import quadratic
from src.problem import sample_problem
from tests.conftest import backend_module, book_fit

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no usable cuda device"),
]


def test_auto_picks_cuda():
    assert backend_module("torch").resolve_device("auto") == "cuda"


def test_cuda_follows_the_cpu_trajectory():
    x, y, w0, b0 = sample_problem(
        quadratic, stream="generator", seed=3, n=1000, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="normal", init_b="normal", dtype="float64",
    )  # fmt: skip
    fit = functools.partial(book_fit, "torch")
    cpu = fit(x, y, w0, b0, lr=1e-4, steps=500, device="cpu")
    cuda = fit(x, y, w0, b0, lr=1e-4, steps=500, device="cuda")
    for series in ("loss", "w", "b"):
        np.testing.assert_allclose(getattr(cuda, series), getattr(cpu, series), rtol=1e-9)


def test_cuda_divergence_is_caught_between_checks():
    x, y, w0, b0 = sample_problem(
        quadratic, stream="generator", seed=3, n=100, noise=0.2, true_w=3.0, true_b=2.0,
        x_min=-1.0, x_max=1.0, init_w="normal", init_b="normal", dtype="float32",
    )  # fmt: skip
    history = book_fit("torch", x, y, w0, b0, lr=1.0, steps=5000, device="cuda")
    assert history.diverged and 0 < len(history.loss) < 5000
    assert np.isfinite(history.loss).all()
