"""MoRF: equality with a per-image loop, analytic cases, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.metrics import morf as morf_mod
from evaluation.metrics.morf import morf


def slow_morf(model, x, y, a, levels=20, baseline=0.0):
    """Obviously-correct reference: one image, one level at a time, torch.quantile thresholds."""
    t = torch.linspace(0, 1, levels, dtype=torch.float64)
    scores, curves = [], []
    for i in range(x.shape[0]):
        ai = a[i].flatten()
        nz = ai[ai != 0]
        with torch.no_grad():
            p0 = F.softmax(model(x[i : i + 1]), 1)[0, y[i]].item()
        curve = []
        for tk in t.tolist():
            xm = x[i].clone().flatten()
            if nz.numel():
                q = torch.quantile(nz, torch.tensor(1.0 - tk, dtype=nz.dtype))
                xm[ai > q] = baseline
            with torch.no_grad():
                p = F.softmax(model(xm.view(1, *x.shape[1:])), 1)[0, y[i]].item()
            curve.append(p / p0)
        area = sum((t[k + 1] - t[k]).item() * ((1 - curve[k]) + (1 - curve[k + 1])) / 2 for k in range(levels - 1))
        scores.append(area)
        curves.append(curve)
    return torch.tensor(scores, dtype=torch.float64), torch.tensor(curves, dtype=torch.float64)


def test_matches_per_image_loop(batch):
    model, x, _, target, a = batch
    x, target, a = x[:12], target[:12], a[:12]
    res = morf(model, x, target, a, batch_size=97)
    score, curve = slow_morf(model, x, target, a)
    assert res.curve.shape == (12, 20) and res.fractions.shape == (20,)
    torch.testing.assert_close(res.curve, curve, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.score, score, atol=1e-5, rtol=0)


def test_matches_loop_with_ties_signed_and_baseline(batch):
    """Signed maps with zeros and ties (rounded values), another baseline and level count."""
    model, x, _, target, a = batch
    a = (torch.randn(x.shape, generator=torch.Generator().manual_seed(3)) * 4).round() / 4
    res = morf(model, x[:8], target[:8], a[:8], levels=7, baseline=0.5)
    score, curve = slow_morf(model, x[:8], target[:8], a[:8], levels=7, baseline=0.5)
    torch.testing.assert_close(res.curve, curve, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.score, score, atol=1e-5, rtol=0)


def test_masks_nested_and_extreme_levels(batch):
    _, x, _, _, a = batch
    m = morf_mod.removal_masks(a, 20)
    assert not m[:, 0].any()  # t = 0 removes nothing
    assert (m[:, :-1] <= m[:, 1:]).all()  # nested
    nz = (a.flatten(1) != 0).sum(1)
    # t = 1 removes every non-zero pixel but the smallest (ties of the minimum stay too)
    assert (m[:, -1].sum(1) <= nz - 1).all() and (m[:, -1].sum(1) >= nz - 3).all()


class IgnoresLeftHalf(nn.Module):
    """Linear classifier that reads only the right half of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(28 * 14, 10)

    def forward(self, x):
        return self.lin(x[..., 14:].flatten(1))


def test_model_ignoring_removed_pixels_gives_flat_curve(batch):
    _, x, _, _, a = batch
    torch.manual_seed(0)
    model = IgnoresLeftHalf()
    a = a.clone()
    a[..., 14:] = 0  # only the ignored half is ever removed
    y = model(x).argmax(1)
    res = morf(model, x, y, a)
    torch.testing.assert_close(res.curve, torch.ones_like(res.curve), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.score, torch.zeros_like(res.score), atol=1e-6, rtol=0)


def test_all_zero_map_removes_nothing(batch):
    model, x, _, target, _ = batch
    res = morf(model, x[:4], target[:4], torch.zeros_like(x[:4]))
    torch.testing.assert_close(res.score, torch.zeros(4, dtype=torch.float64), atol=1e-6, rtol=0)


def test_faithful_map_beats_random(batch):
    model, x, _, target, a = batch
    r = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert morf(model, x, target, a).score.mean() > morf(model, x, target, r).score.mean() + 0.1


def test_mode_restored(batch):
    model, x, _, target, a = batch
    model.train()
    try:
        morf(model, x[:2], target[:2], a[:2])
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize(
    "kind, match",
    [("shape", "shape of x"), ("empty", "non-empty"), ("nan", "NaN"), ("levels", "levels"), ("y", "y must")],
)
def test_bad_input(batch, kind, match):
    model, x, _, target, a = batch
    args, kw = [model, x[:4], target[:4], a[:4]], {}
    if kind == "shape":
        args[3] = a[:3]
    elif kind == "empty":
        args[1], args[2], args[3] = x[:0], target[:0], a[:0]
    elif kind == "nan":
        args[3] = a[:4].clone()
        args[3][1, 0, 3, 3] = float("nan")
    elif kind == "levels":
        kw["levels"] = 0
    else:
        args[2] = target[:3]
    with pytest.raises(ValueError, match=match):
        morf(*args, **kw)
