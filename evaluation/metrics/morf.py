"""MoRF: most relevant first out (docs/spec.md §5).

Definition. For image x with originally predicted class ŷ (the ``y`` passed in) and attribution
a (flattened to d pixels), let A⁺ = {a_i : a_i ≠ 0} be its n non-zero attributions. For
``levels`` = L removal fractions t_k = k/(L−1), k = 0..L−1 (the percentiles p_k = 100·(1 − t_k)
run over the grid of L levels from 100 down to 0), the threshold q_k is the p_k-th percentile of
A⁺ with linear interpolation (``torch.quantile``/``numpy.percentile``'s default), and

    x^(k) = x with every pixel i such that a_i > q_k set to ``baseline``
    curve_k = p_ŷ(x^(k)) / p_ŷ(x)                 (softmax probabilities)
    score   = ∫ (1 − curve) dt over t ∈ [0, 1]    (trapezoid rule on the t_k)

t_0 = 0 removes nothing (curve_0 = 1); t_{L−1} = 1 removes every pixel above the smallest
non-zero attribution. The removal sets are nested. An image whose attributions are all zero
has nothing removed at any level (curve ≡ 1, score 0). Higher score = more faithful: removing
what the map ranks first destroys the prediction sooner. The score can be negative when removal
raises p_ŷ.

All L·B masked images are built as tensors and evaluated in chunks of ``batch_size`` images.

References
----------
Samek, Binder, Montavon, Lapuschkin, Müller (2017). Evaluating the visualization of what a deep
neural network has learned. IEEE TNNLS 28(11). (MoRF / region perturbation.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evaluation.metrics._common import (
    DEFAULT_BATCH_SIZE,
    MetricInput,
    Rows,
    check_batch,
    check_batch_size,
    check_positive_int,
    device_of,
    eval_mode,
    forward_chunked,
    trapezoid,
)
from evaluation.metrics.registry import REGISTRY

SPEC = REGISTRY["morf"]  # direction, outputs, parameters, references: evaluation/metrics/registry.py
NAME = SPEC.name
HIGHER_IS_BETTER = SPEC.higher_is_better
OUTPUTS = SPEC.directions()  # reported metric -> higher is better (curve points have no direction)
REFERENCE = SPEC.reference


@dataclass(frozen=True)
class MorfResult:
    """``score`` (B,), ``curve`` (B, L) and the removal ``fractions`` (L,), all on the CPU."""

    score: Tensor
    curve: Tensor
    fractions: Tensor


def fractions(levels: int = 20) -> Tensor:
    """The removal fractions t_k = k/(levels−1) (float64, 0 for levels = 1)."""
    check_positive_int("levels", levels)
    return torch.linspace(0.0, 1.0, levels, dtype=torch.float64) if levels > 1 else torch.zeros(1, dtype=torch.float64)


def thresholds(attributions: Tensor, levels: int = 20) -> Tensor:
    """q (B, L): the (1 − t_k) quantile of each image's non-zero attributions (+inf if none).

    Same arithmetic as ``torch.quantile(a[a != 0], 1 - t_k)`` (linear interpolation, computed in
    the attributions' dtype), for the whole batch at once.
    """
    a = attributions.flatten(1)
    nz = a != 0
    n = nz.sum(1)
    s = torch.where(nz, a, torch.full_like(a, float("inf"))).sort(1).values
    q = (1.0 - fractions(levels)).to(a.dtype).to(a.device)  # quantile levels, (L,)
    ranks = q[None, :] * (n - 1).clamp_min(0).to(a.dtype)[:, None]  # (B, L)
    lo = ranks.floor().long()
    hi = ranks.ceil().long()
    w = ranks - lo.to(a.dtype)
    vlo, vhi = s.gather(1, lo), s.gather(1, hi)
    thr = torch.lerp(vlo, vhi, w)
    return torch.where((n > 0)[:, None], thr, torch.full_like(thr, float("inf")))


def removal_masks(attributions: Tensor, levels: int = 20) -> Tensor:
    """Bool (B, L, d): pixel i removed at level k (a_i > q_k)."""
    a = attributions.flatten(1)
    return a[:, None, :] > thresholds(attributions, levels)[:, :, None]


def removal_probabilities(
    model: nn.Module, x: Tensor, y: Tensor, masks: Tensor, baseline: float, batch_size: int
) -> tuple[Tensor, Tensor]:
    """(p_ŷ(x) (B,), p_ŷ(x masked) (B, L)) for masks (B, L, d); chunked forward passes."""
    dev = device_of(model)
    b, L, d = masks.shape
    xf = x.reshape(b, d)
    yd = y.to(dev)

    def make(i: int, j: int) -> Tensor:
        rows = torch.arange(i, j, device=masks.device)
        bi, li = rows // L, rows % L
        xm = xf[bi].masked_fill(masks[bi, li], baseline)
        return xm.view(j - i, *x.shape[1:]).to(dev)

    with eval_mode(model):
        p0 = F.softmax(forward_chunked(model, b, lambda i, j: x[i:j].to(dev), batch_size).float(), 1)
        p0 = p0.gather(1, yd[:, None])[:, 0]
        pm = F.softmax(forward_chunked(model, b * L, make, batch_size).float(), 1)
        pm = pm.view(b, L, -1).gather(2, yd[:, None, None].expand(b, L, 1))[..., 0]
    return p0, pm


def morf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attributions: Tensor,
    *,
    levels: int = 20,
    baseline: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> MorfResult:
    """MoRF curve and score per image (see the module docstring for the definition).

    Args:
        model: classifier (B×1×28×28 -> B×C logits); evaluated in eval mode, mode restored.
        x: float images (B, 1, 28, 28) in [0, 1].
        y: class whose probability is tracked, (B,) int — the originally predicted class (docs/spec.md §5).
        attributions: maps shaped like ``x``; finite.
        levels: number of removal fractions, evenly spaced over [0, 1] (default 20).
        baseline: value removed pixels are set to (default 0, the background).
        batch_size: images per forward pass (B·levels masked images are evaluated in chunks).

    Returns:
        :class:`MorfResult` with ``score`` (B,), ``curve`` (B, levels) and ``fractions`` (levels,)
        as CPU tensors (float64 score/curve for exact areas).
    """
    check_batch(x, y, attributions)
    check_positive_int("levels", levels)
    check_batch_size(batch_size)
    y = torch.as_tensor(y).long()
    t = fractions(levels)
    masks = removal_masks(attributions.to(x.device), levels)
    p0, pm = removal_probabilities(model, x, y, masks, float(baseline), batch_size)
    curve = (pm.double() / p0.double()[:, None]).cpu()
    score = trapezoid(1.0 - curve, t)
    return MorfResult(score=score, curve=curve, fractions=t)


def rows(inp: MetricInput) -> Rows:
    """The registered outputs for :func:`evaluation.evaluate.evaluate_model`: score and curve."""
    r = morf(inp.model, inp.x, inp.target, inp.attributions, **inp.params, batch_size=inp.batch_size)
    return [("morf", r.score, None), ("morf_curve", r.curve, r.fractions)]


def explanation_score(model: nn.Module, x: Tensor, levels: int = 20) -> float:
    """The search's validation explanation score (docs/spec.md §6): the mean MoRF score of Saliency maps towards
    the predicted class on ``x`` (higher = more faithful); the model's mode is restored."""
    from evaluation.attributions import attribute

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred = model(x).argmax(1)
        a = attribute(model, x, pred, "saliency")
        return float(morf(model, x, pred, a, levels=levels).score.mean())
    finally:
        model.train(was)
