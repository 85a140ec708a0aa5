"""Every model's hand-written gradient (§2.6) against central finite differences of its own `predict`,
and against torch autograd of that `predict` (§2.7)."""

import numpy as np
import pytest
import torch

from src import models, usage
from src.backends.numpy_gd import BLOCK, loss_and_grad, summation_tree

POINTS = [(0.5, -0.3), (3.0, 2.0), (-1.7, 4.2)]
MODELS = [models.load(module) for module in usage.options("model").values()]


def _data(model, n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    y = models.values(model, x, 3.0, 2.0) + rng.normal(size=n)
    return x, y


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("w,b", POINTS)
def test_gradient_matches_central_differences(model, w, b):
    x, y = _data(model)
    _, grad_w, grad_b = model.loss_and_grad(model.features(x), y, w, b)

    def loss(w, b):  # from `predict`, not from the gradient under test
        return models.loss(model, x, y, w, b)

    # The loss of a model linear in (w, b) is quadratic, so central differences are exact up to rounding.
    h = 1e-3
    fd_w = (loss(w + h, b) - loss(w - h, b)) / (2 * h)
    fd_b = (loss(w, b + h) - loss(w, b - h)) / (2 * h)
    assert grad_w == pytest.approx(fd_w, rel=1e-6)
    assert grad_b == pytest.approx(fd_b, rel=1e-6)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("w,b", POINTS)
def test_gradient_matches_torch_autograd(model, w, b):
    x, y = _data(model, seed=1)
    loss, grad_w, grad_b = model.loss_and_grad(model.features(x), y, w, b)

    tw = torch.full((1, 1), w, dtype=torch.float64, requires_grad=True)
    tb = torch.full((1, 1), b, dtype=torch.float64, requires_grad=True)
    tx, ty = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).unsqueeze(1)
    tloss = 0.5 * ((model.predict(model.features(tx), tw, tb) - ty) ** 2).sum()
    tloss.backward()

    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    assert grad_w == pytest.approx(tw.grad.item(), rel=1e-8)
    assert grad_b == pytest.approx(tb.grad.item(), rel=1e-8)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,block", [(7, 128), (129, 128), (1000, 128), (100_003, 4096), (300_001, BLOCK)])
def test_sums_block_by_block_are_np_sum_bit_for_bit(model, n, block, dtype):
    """Added along `summation_tree`, the blocks' sums are np.sum's of the whole arrays, to the last bit."""
    x, y = (a.astype(dtype) for a in _data(model, n))
    w, b = x.dtype.type(2.9), x.dtype.type(2.1)
    blocks, tree = summation_tree(n, block)
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks[:-1], blocks[1:], strict=True))
    f = model.features(x)
    blocked = loss_and_grad(model, f, y, w, b, blocks, tree)
    whole = model.loss_and_grad(f, y, w, b)
    assert [v.dtype for v in blocked] == [np.dtype(dtype)] * 3
    assert [v.tobytes() for v in blocked] == [v.tobytes() for v in whole]
