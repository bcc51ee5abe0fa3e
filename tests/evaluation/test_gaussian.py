"""Gaussian noise: accuracy (σ = 0, per-image loop), sensitivity (Captum, loop), bad σ lists."""

from __future__ import annotations

import functools

import pytest
import torch
from captum.metrics import sensitivity_max

from evaluation.attributions import attribute
from evaluation.metrics.gaussian import draw_noise, gaussian


def test_sigma_zero_is_clean_accuracy(batch):
    model, x, labels, _, _ = batch
    r = gaussian(model, x, labels, sigmas=[0.0, 0.5], n_draws=3)
    with torch.no_grad():
        clean = (model(x).argmax(1) == labels).double()
    torch.testing.assert_close(r.accuracy[:, 0], clean)
    assert r.accuracy.shape == (x.shape[0], 2) and r.area.shape == (x.shape[0],)


def test_accuracy_matches_per_image_loop(batch):
    model, x, labels, _, _ = batch
    x, labels = x[:10], labels[:10]
    sigmas = [0.1, 0.5, 1.0, 1.5]
    noise = draw_noise(3, x.shape, seed=7)
    r = gaussian(model, x, labels, sigmas=sigmas, n_draws=3, seed=7, batch_size=13)
    ref = torch.zeros(10, 4, dtype=torch.float64)
    for i in range(10):
        for s, sigma in enumerate(sigmas):
            for k in range(3):
                with torch.no_grad():
                    pred = model((x[i] + sigma * noise[k, i])[None]).argmax(1).item()
                ref[i, s] += (pred == labels[i].item()) / 3
    torch.testing.assert_close(r.accuracy, ref)
    area = sum((sigmas[j + 1] - sigmas[j]) * (ref[:, j] + ref[:, j + 1]) / 2 for j in range(3))
    torch.testing.assert_close(r.area, area)


def test_max_sensitivity_equals_captum_with_same_noise(batch):
    model, x, _, t, a = batch
    x, t, a = x[:8], t[:8], a[:8]
    k, sigma = 4, 0.5
    noise = draw_noise(k, x.shape, seed=3)
    fn = functools.partial(attribute, model, method="saliency")
    r = gaussian(model, x, t, a, sigmas=[sigma], noise=noise, attribute_fn=fn, target=t)

    def perturb(inputs):  # Captum repeats each input k times in a row (repeat_interleave)
        return inputs + sigma * noise.transpose(0, 1).reshape(-1, *x.shape[1:])

    def explain(inputs, target):
        inp = inputs[0] if isinstance(inputs, tuple) else inputs
        return (attribute(model, inp, target, "saliency"),)  # Captum iterates over a tuple

    ref = sensitivity_max(explain, x, perturb_func=perturb, n_perturb_samples=k, target=t)
    torch.testing.assert_close(r.max_sensitivity[:, 0], ref.double(), atol=1e-5, rtol=1e-5)
    # average sensitivity: the mean of the same per-draw ratios, by a plain loop
    avg = torch.zeros(8, dtype=torch.float64)
    for i in range(8):
        for j in range(k):
            ap = attribute(model, (x[i] + sigma * noise[j, i])[None], t[i : i + 1], "saliency")[0]
            avg[i] += ((ap - a[i]).norm() / a[i].norm()).item() / k
    torch.testing.assert_close(r.avg_sensitivity[:, 0], avg, atol=1e-5, rtol=1e-5)
    assert (r.max_sensitivity >= r.avg_sensitivity).all()


def test_deterministic_method_has_zero_sensitivity_at_sigma_zero(batch):
    model, x, labels, t, a = batch
    fn = functools.partial(attribute, model, method="saliency")
    r = gaussian(model, x[:4], labels[:4], a[:4], sigmas=[0.0, 0.2], n_draws=2, attribute_fn=fn)
    torch.testing.assert_close(r.max_sensitivity[:, 0], torch.zeros(4, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (r.max_sensitivity[:, 1] > 0).all()


def test_seeds(batch):
    model, x, labels, _, _ = batch
    r1 = gaussian(model, x, labels, sigmas=[1.0, 1.5], seed=1)
    assert torch.equal(r1.accuracy, gaussian(model, x, labels, sigmas=[1.0, 1.5], seed=1).accuracy)
    assert not torch.equal(draw_noise(2, (3, 4), seed=1), draw_noise(2, (3, 4), seed=2))


@pytest.mark.parametrize("sigmas", [[0.5, 0.1], [0.1, 0.1], [], [-0.1, 0.2], [0.1, float("nan")]])
def test_bad_sigmas(batch, sigmas):
    model, x, labels, _, _ = batch
    with pytest.raises(ValueError, match="sigmas"):
        gaussian(model, x[:2], labels[:2], sigmas=sigmas)


def test_other_bad_input(batch):
    model, x, labels, _, a = batch
    fn = functools.partial(attribute, model, method="saliency")
    with pytest.raises(ValueError, match="clean attributions"):
        gaussian(model, x[:2], labels[:2], attribute_fn=fn)
    with pytest.raises(ValueError, match="noise must"):
        gaussian(model, x[:2], labels[:2], noise=torch.zeros(2, 3, 1, 28, 28))
    with pytest.raises(ValueError, match="n_draws"):
        gaussian(model, x[:2], labels[:2], n_draws=0)
    with pytest.raises(ValueError, match="non-empty"):
        gaussian(model, x[:0], labels[:0])


def test_area_clean_starts_at_the_clean_accuracy():
    """docs/spec.md §5: the Gaussian area includes σ = 0 (the clean accuracy), as a naive trapezoid says."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:2] = (y[:2] + 1) % 10  # two wrong labels: clean accuracy 0 there
    r = gaussian(model, x, y, sigmas=[0.5, 1.0], n_draws=2, seed=0)
    torch.testing.assert_close(r.clean_accuracy, (pred == y).double())
    for i in range(6):
        c, a0, a1 = float(r.clean_accuracy[i]), float(r.accuracy[i, 0]), float(r.accuracy[i, 1])
        assert float(r.area_clean[i]) == pytest.approx(0.5 * (c + a0) / 2 + 0.5 * (a0 + a1) / 2)
    assert torch.equal(gaussian(model, x, y, sigmas=[0.0, 1.0], n_draws=2).area_clean,
                       gaussian(model, x, y, sigmas=[0.0, 1.0], n_draws=2).area)
