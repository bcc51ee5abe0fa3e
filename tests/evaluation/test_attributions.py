"""Attribution methods: values against Captum/autograd, batching, seeding, mode, errors."""

from __future__ import annotations

import pytest
import torch

from evaluation.attributions import METHODS, attribute


def _grad(model, x, t):
    x = x.clone().requires_grad_(True)
    out = model(x).gather(1, t[:, None]).sum()
    (g,) = torch.autograd.grad(out, x)
    return g


def test_saliency_and_input_x_gradient_are_gradients(batch):
    model, x, _, t, a = batch
    g = _grad(model, x, t)
    torch.testing.assert_close(a, g.abs())
    torch.testing.assert_close(attribute(model, x, t, "input_x_gradient"), x * g)


def test_integrated_gradients_completeness(batch):
    """IG with baseline 0 sums to f_t(x) − f_t(0) (up to the quadrature error)."""
    model, x, _, t, _ = batch
    a = attribute(model, x[:8], t[:8], "integrated_gradients", n_steps=64, batch_size=100)
    with torch.no_grad():
        gap = model(x[:8]).gather(1, t[:8, None])[:, 0] - model(torch.zeros_like(x[:8])).gather(1, t[:8, None])[:, 0]
    torch.testing.assert_close(a.flatten(1).sum(1), gap, atol=0.05 * gap.abs().max().item(), rtol=0)


def test_batching_does_not_change_values(batch):
    model, x, _, t, _ = batch
    for m in ("saliency", "integrated_gradients", "input_x_gradient"):
        torch.testing.assert_close(
            attribute(model, x[:10], t[:10], m, batch_size=3), attribute(model, x[:10], t[:10], m)
        )


@pytest.mark.parametrize("method", ["smoothgrad", "random"])
def test_seeded(batch, method):
    model, x, _, t, _ = batch
    state = torch.random.get_rng_state()
    a1 = attribute(model, x[:6], t[:6], method, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    torch.rand(3)
    assert torch.equal(a1, attribute(model, x[:6], t[:6], method, seed=1))
    assert not torch.equal(a1, attribute(model, x[:6], t[:6], method, seed=2))
    assert a1.shape == x[:6].shape and (a1 >= 0).all()


def test_smoothgrad_is_mean_of_noisy_saliency(batch):
    """Few noise samples: SmoothGrad equals the mean |gradient| over the same noisy copies."""
    model, x, _, t, _ = batch
    xs, ts = x[:3], t[:3]
    sg = attribute(model, xs, ts, "smoothgrad", nt_samples=4, stdevs=0.2, seed=5)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        noise = torch.normal(0, torch.full((12, 1, 28, 28), 0.2))
    noisy = xs.repeat_interleave(4, 0) + noise
    ref = _grad(model, noisy, ts.repeat_interleave(4)).abs().view(3, 4, 1, 28, 28).mean(1)
    torch.testing.assert_close(sg, ref)


def test_all_methods_shape_and_mode_restored(batch):
    model, x, _, t, _ = batch
    model.train()
    try:
        small = {"integrated_gradients": {"n_steps": 8}, "deeplift_shap": {"n_baselines": 2, "baselines": x[-2:]},
                 "kernel_shap": {"superpixel": 14, "n_samples": 8}, "occlusion": {"window": 14, "stride": 14}}
        for m in METHODS:
            a = attribute(model, x[:2], t[:2], m, **small.get(m, {}))
            assert a.shape == x[:2].shape and torch.isfinite(a).all()
            assert model.training
    finally:
        model.eval()


def test_errors(batch):
    model, x, _, t, _ = batch
    with pytest.raises(ValueError, match="valid choices: saliency, integrated_gradients"):
        attribute(model, x[:2], t[:2], "gradcam")
    with pytest.raises(ValueError, match="unknown parameter"):
        attribute(model, x[:2], t[:2], "saliency", n_steps=3)
    with pytest.raises(ValueError, match="non-empty"):
        attribute(model, x[:0], t[:0], "saliency")
    with pytest.raises(ValueError, match="target"):
        attribute(model, x[:2], t[:3], "saliency")
