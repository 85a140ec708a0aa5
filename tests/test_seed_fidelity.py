"""Each preset against the book's own code, run as written: the same final w and b, exactly."""

import runpy
from pathlib import Path

import matplotlib
import pytest

from src.config import load_config
from src.problem import make_problem
from tests.conftest import backend_module, book_fit, compose_config

matplotlib.use("Agg")
BOOK = Path(__file__).parent / "book"


def _run_preset(name: str):
    config = load_config(compose_config(f"experiment={name}"))
    x, y, w0, b0 = make_problem(config)
    backend = config.backend.name
    device = backend_module(backend).resolve_device(config.device.value)
    return book_fit(backend, x, y, w0, b0, lr=config.lr, steps=config.steps, device=device)


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_seed_numpy_preset_equals_section_2_6():
    book = runpy.run_path(str(BOOK / "section_2_6.py"))
    history = _run_preset("seed_numpy")
    w, b = history.w[-1], history.b[-1]
    assert w.dtype == book["w1"].dtype
    assert (w, b) == (book["w1"].item(), book["b1"].item())
    assert history.loss[-1] == book["loss"]  # the book's loss at its last step, summed as the book sums it


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_seed_torch_preset_equals_section_2_7():
    book = runpy.run_path(str(BOOK / "section_2_7.py"))
    history = _run_preset("seed_torch")
    w, b = history.w[-1], history.b[-1]
    assert str(w.dtype) == "float32" and book["w"].dtype.__repr__() == "torch.float32"
    assert (w, b) == (book["w"].item(), book["b"].item())
