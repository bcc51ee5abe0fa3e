"""Faithfulness (nested top-k and Bhatt et al.): per-image loops, analytic case, seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr
from torch import nn

from evaluation.attributions import attribute
from evaluation.metrics.faithfulness import (
    draw_subsets,
    faithfulness,
    faithfulness_correlation,
    faithfulness_nested,
)


def _corr(u, v):
    return float(pearsonr(u, v)[0])


def test_nested_matches_per_image_loop(batch):
    model, x, _, t, a = batch
    x, t, a = x[:8], t[:8], a[:8]
    ours = faithfulness_nested(model, x, t, a, batch_size=50)
    ref = []
    for i in range(x.shape[0]):
        ai = a[i].flatten()
        nz = ai[ai != 0]
        with torch.no_grad():
            p0 = F.softmax(model(x[i : i + 1]), 1)[0, t[i]].item()
        mass, drop = [], []
        for tk in torch.linspace(0, 1, 20, dtype=torch.float64).tolist():
            mask = ai > torch.quantile(nz, torch.tensor(1.0 - tk, dtype=nz.dtype))
            xm = x[i].flatten().clone()
            xm[mask] = 0.0
            with torch.no_grad():
                p = F.softmax(model(xm.view(1, 1, 28, 28)), 1)[0, t[i]].item()
            mass.append(ai[mask].double().sum().item())
            drop.append(p0 - p)
        ref.append(_corr(mass, drop))
    torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-5, rtol=0)


def test_bhatt_matches_per_image_loop(batch):
    model, x, _, t, a = batch
    x, t, a = x[:8], t[:8], a[:8]
    subsets = draw_subsets(8, 784, n_subsets=25, subset_fraction=0.2, seed=4)
    assert (subsets.sum(2) == round(0.2 * 784)).all()
    ours = faithfulness_correlation(model, x, t, a, subsets=subsets, batch_size=64)
    # the documented derivation gives the same subsets when the metric draws them itself
    torch.testing.assert_close(ours, faithfulness_correlation(model, x, t, a, n_subsets=25, seed=4))
    ref = []
    for i in range(8):
        with torch.no_grad():
            f0 = model(x[i : i + 1])[0, t[i]].item()
        sums, drops = [], []
        for m in range(25):
            s = subsets[i, m]
            xm = x[i].flatten().clone()
            xm[s] = 0.0
            with torch.no_grad():
                drops.append(f0 - model(xm.view(1, 1, 28, 28))[0, t[i]].item())
            sums.append(a[i].flatten()[s].double().sum().item())
        ref.append(_corr(sums, drops))
    torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-5, rtol=0)


def test_linear_model_input_x_gradient_is_exactly_faithful(batch):
    """f(x) = Wx, a = x ⊙ ∇f_y = x ⊙ W_y: removing S drops f_y by Σ_S a_i, so the correlation is 1."""
    _, x, _, _, _ = batch
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=False)).double()
    xd = x[:16].double()
    t = model(xd).argmax(1)
    a = attribute(model, xd, t, "input_x_gradient")
    corr = faithfulness_correlation(model, xd, t, a, n_subsets=50, seed=1)
    torch.testing.assert_close(corr, torch.ones(16, dtype=torch.float64), atol=1e-9, rtol=0)


def test_seeds(batch):
    model, x, _, t, a = batch
    s1 = draw_subsets(70, 784, 5, 0.2, seed=1)  # spans two seeded blocks of 64 images
    assert torch.equal(s1, draw_subsets(70, 784, 5, 0.2, seed=1))
    assert not torch.equal(s1, draw_subsets(70, 784, 5, 0.2, seed=2))
    assert not torch.equal(s1[0], s1[64])
    c1 = faithfulness_correlation(model, x[:8], t[:8], a[:8], n_subsets=20, seed=1)
    assert torch.equal(c1, faithfulness_correlation(model, x[:8], t[:8], a[:8], n_subsets=20, seed=1, batch_size=7))
    assert not torch.equal(c1, faithfulness_correlation(model, x[:8], t[:8], a[:8], n_subsets=20, seed=2))


def test_both_variants_and_direction(batch):
    model, x, _, t, a = batch
    r = faithfulness(model, x[:16], t[:16], a[:16], n_subsets=40)
    rnd = torch.rand(x[:16].shape, generator=torch.Generator().manual_seed(0))
    assert r.nested.shape == r.correlation.shape == (16,)
    assert ((r.nested >= -1) & (r.nested <= 1)).all()
    assert r.nested.mean() > faithfulness_nested(model, x[:16], t[:16], rnd).mean()


def test_bad_input(batch):
    model, x, _, t, a = batch
    with pytest.raises(ValueError, match="shape of x"):
        faithfulness_correlation(model, x[:4], t[:4], a[:3])
    with pytest.raises(ValueError, match="subset_fraction"):
        faithfulness_correlation(model, x[:4], t[:4], a[:4], subset_fraction=1.5)
    with pytest.raises(ValueError, match="subsets must"):
        faithfulness_correlation(model, x[:4], t[:4], a[:4], subsets=torch.zeros(4, 3, 10, dtype=torch.bool))
    nan = a[:4].clone()
    nan[2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        faithfulness_nested(model, x[:4], t[:4], nan)
