"""The hand-written gradients of §2.6 against central finite differences and torch autograd."""

import numpy as np
import pytest
import torch

from src.backends.numpy_gd import BLOCK, loss_and_grad, summation_tree

POINTS = [(0.5, -0.3), (3.0, 2.0), (-1.7, 4.2)]


def _data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    y = 3 * x**2 + 2 + rng.normal(size=n)
    return x, y


def _numpy_loss_and_grad(x, y, w, b):
    return loss_and_grad(x * x, y, w, b, np.empty_like(x), np.empty_like(x))


@pytest.mark.parametrize("w,b", POINTS)
def test_gradient_matches_central_differences(w, b):
    x, y = _data()
    _, grad_w, grad_b = _numpy_loss_and_grad(x, y, w, b)

    def loss(w, b):  # written out again, independently of the code under test
        return 0.5 * np.sum((w * x**2 + b - y) ** 2)

    # The loss is quadratic, so central differences are exact up to rounding.
    h = 1e-3
    fd_w = (loss(w + h, b) - loss(w - h, b)) / (2 * h)
    fd_b = (loss(w, b + h) - loss(w, b - h)) / (2 * h)
    assert grad_w == pytest.approx(fd_w, rel=1e-8)
    assert grad_b == pytest.approx(fd_b, rel=1e-8)


@pytest.mark.parametrize("w,b", POINTS)
def test_gradient_matches_torch_autograd(w, b):
    x, y = _data(seed=1)
    loss, grad_w, grad_b = _numpy_loss_and_grad(x, y, w, b)

    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    tloss = 0.5 * ((tw * tx**2 + tb - ty) ** 2).sum()
    tloss.backward()

    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    assert grad_w == pytest.approx(tw.grad.item(), rel=1e-8)
    assert grad_b == pytest.approx(tb.grad.item(), rel=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,block", [(7, 128), (129, 128), (1000, 128), (100_003, 4096), (300_001, BLOCK)])
def test_sums_block_by_block_are_np_sum_bit_for_bit(n, block, dtype):
    """Added along `summation_tree`, the blocks' sums are np.sum's of the whole arrays, to the last bit."""
    x, y = (a.astype(dtype) for a in _data(n))
    w, b = x.dtype.type(2.9), x.dtype.type(2.1)
    blocks, tree = summation_tree(n, block)
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks[:-1], blocks[1:], strict=True))
    scratch = min(n, block)
    blocked = loss_and_grad(x * x, y, w, b, np.empty(scratch, dtype), np.empty(scratch, dtype), blocks, tree)
    r = (x * x) * w + b - y  # the book's expressions, on the whole arrays
    whole = (0.5 * np.sum(r * r), np.sum(r * (x * x)), np.sum(r))
    assert [v.dtype for v in blocked] == [np.dtype(dtype)] * 3
    assert [v.tobytes() for v in blocked] == [v.tobytes() for v in whole]
