"""Saliency: the one-pass batched gradient equals a slow per-sample autograd loop (docs/spec.md §3)."""

from __future__ import annotations

import pytest
import torch

from foundations.data import to_float
from trainables.models import BatchNorm2d, build_model
from trainables.saliency import input_gradient, minmax


def per_sample_loop(model, x, y, seed):
    """Obviously correct: for each i, a full-batch forward, then ∂ f(x)[i, y_i] / ∂ x_i."""
    out = torch.empty_like(x)
    for i in range(len(x)):
        torch.manual_seed(seed)  # identical dropout masks in every forward
        xr = x.clone().requires_grad_(True)
        logits = model(xr)
        (grad,) = torch.autograd.grad(logits[i, y[i]], xr)
        out[i] = grad[i]
    return out


@pytest.mark.parametrize("name", ["cnn3b", "cnn4b"])
def test_batched_equals_per_sample_loop_in_train_mode(name, mnist):
    torch.manual_seed(0)
    model = build_model(name).double().train()  # BatchNorm with batch statistics, dropout on
    x = to_float(mnist.train_x[:12]).double()
    y = mnist.train_y[:12]
    torch.manual_seed(7)
    logits, g = input_gradient(model, x, y, create_graph=False)
    ref = per_sample_loop(model, x, y, seed=7)
    assert g.shape == x.shape and g.abs().sum() > 0
    torch.testing.assert_close(g, ref, rtol=1e-6, atol=1e-6)


def test_plain_batchnorm_would_not_be_per_sample(mnist):
    """Guard for the test above: with torch's BatchNorm the sum trick is *not* per-sample."""
    torch.manual_seed(0)
    model = build_model("cnn4b").double().train()
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            m.stop_grad_stats = False
    x = to_float(mnist.train_x[:6]).double()
    y = mnist.train_y[:6]
    torch.manual_seed(7)
    _, g = input_gradient(model, x, y, create_graph=False)
    assert (g - per_sample_loop(model, x, y, seed=7)).abs().max() > 1e-4


def test_saliency_stays_in_graph():
    model = build_model("cnn3b")
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    _, g = input_gradient(model, x, y)
    (gw,) = torch.autograd.grad(g.abs().mean(), model[0].weight)
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0
    assert x.grad is None  # the caller's tensor is untouched


def test_minmax_per_sample():
    g = torch.stack([torch.arange(4.0).view(1, 2, 2), -torch.ones(1, 2, 2)])
    gh = minmax(g)
    torch.testing.assert_close(gh[0], torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]]]), rtol=1e-6, atol=1e-6)
    assert torch.equal(gh[1], torch.zeros(1, 2, 2))  # constant map: eps keeps it finite
