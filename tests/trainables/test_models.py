"""Models: the docs/spec.md §2 architectures, and the stop-gradient BatchNorm's bookkeeping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import BatchNorm2d, build_model


def _shapes(model):
    return [tuple(p.shape) for p in model.parameters()]


def test_cnn3b_architecture():
    m = build_model("cnn3b")
    assert _shapes(m) == [(8, 1, 5, 5), (8,), (16, 8, 5, 5), (16,), (10, 784), (10,)]
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_cnn4b_architecture():
    m = build_model("cnn4b")
    assert _shapes(m) == [(32, 1, 3, 3), (32,), (32,), (32,), (64, 32, 3, 3), (64,), (64,), (64,),
                          (32, 16384), (32,), (10, 32), (10,)]
    assert [mod.p for mod in m.modules() if isinstance(mod, nn.Dropout)] == [0.15, 0.25]
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="valid choices: cnn3b, cnn4b"):
        build_model("resnet")


def test_stop_grad_batchnorm_matches_torch_values_and_running_stats():
    torch.manual_seed(0)
    ours, ref = BatchNorm2d(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        ours.weight.uniform_(), ours.bias.uniform_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    for _ in range(3):
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked == ref.num_batches_tracked == 3
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))
    # the difference: no gradient flows through the batch statistics
    ours.train()
    xr = x.clone().requires_grad_(True)
    ours(xr)[0].sum().backward()
    assert xr.grad[1:].abs().max() == 0  # sample 0's output does not depend on other samples
