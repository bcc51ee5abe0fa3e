"""Faithfulness: two correlation variants, both reported (docs/spec.md §5).

(a) ``nested`` (the seed's). With the MoRF removal sets R_k (see :mod:`evaluation.metrics.morf`:
    the pixels above the (1 − t_k) quantile of the non-zero attributions, t_k = k/(L−1)), per
    image the Pearson correlation over the L levels between

        Σ_{i ∈ R_k} a_i      and      p_y(x) − p_y(x with R_k set to the baseline)

    (softmax probabilities of the class ``y``, the originally predicted class).

(b) ``correlation`` (Bhatt et al. 2020, "faithfulness correlation"). Per image, draw
    ``n_subsets`` random pixel subsets S_m of size k = round(``subset_fraction`` · d) and take
    the Pearson correlation over m between

        Σ_{i ∈ S_m} a_i      and      f_y(x) − f_y(x with S_m set to the baseline)

    (logits). The subsets are uniform k-subsets: S_m = the k largest of d i.i.d. U(0, 1) draws
    (``torch.topk``). They are drawn by :func:`draw_subsets` in blocks of
    :data:`SUBSET_BLOCK` images, block j from ``torch.Generator().manual_seed(seed * 1_000_003
    + j)``, so the values do not depend on ``batch_size``; precomputed subsets can be passed.

Both lie in [−1, 1]; higher = more faithful. A correlation with a constant side (e.g. a model
whose output never changes) is undefined and reported as 0 (no linear relation measurable).

References
----------
Bhatt, Weller, Moura (2020). Evaluating and aggregating feature-based model explanations.
IJCAI 2020, 3016–3022. (Variant (b); ``quantus.FaithfulnessCorrelation``.)
Alvarez-Melis, Jaakkola (2018). Towards robust interpretability with self-explaining neural
networks. NeurIPS 2018. (Variant (a): correlation of attribution mass and output drop.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foundations import seeds
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
    masked_sums,
    pearson,
)
from evaluation.metrics.registry import REGISTRY
from evaluation.metrics.morf import removal_masks, removal_probabilities

SPEC = REGISTRY["faithfulness"]  # direction, outputs, parameters, references: evaluation/metrics/registry.py
NAME = SPEC.name
HIGHER_IS_BETTER = SPEC.higher_is_better
OUTPUTS = SPEC.directions()  # reported metric -> higher is better (curve points have no direction)
REFERENCE = SPEC.reference
SUBSET_BLOCK = 64  # images per independently seeded block of subset draws


@dataclass(frozen=True)
class FaithfulnessResult:
    """Per-sample (B,) float64 values of both variants (CPU)."""

    nested: Tensor
    correlation: Tensor


def faithfulness_nested(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attributions: Tensor,
    *,
    levels: int = 20,
    baseline: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Tensor:
    """Variant (a): Pearson correlation of removed attribution mass and probability drop (B,)."""
    check_batch(x, y, attributions)
    check_positive_int("levels", levels)
    check_batch_size(batch_size)
    y = torch.as_tensor(y).long()
    a = attributions.to(x.device)
    masks = removal_masks(a, levels)
    p0, pm = removal_probabilities(model, x, y, masks, float(baseline), batch_size)
    mass = masked_sums(masks, a)
    return pearson(mass.cpu(), (p0[:, None] - pm).cpu())


def subset_size(subset_fraction: float, d: int) -> int:
    if not (0 < subset_fraction < 1):
        raise ValueError(f"subset_fraction must be in (0, 1), got {subset_fraction!r}")
    return max(1, int(round(subset_fraction * d)))


def draw_subsets(b: int, d: int, n_subsets: int = 100, subset_fraction: float = 0.2, seed: int = 0) -> Tensor:
    """Bool (b, n_subsets, d) masks of uniform random k-subsets, k = round(fraction · d)."""
    check_positive_int("n_subsets", n_subsets)
    k = subset_size(subset_fraction, d)
    out = torch.zeros(b, n_subsets, d, dtype=torch.bool)
    for j, i in enumerate(range(0, b, SUBSET_BLOCK)):
        g = torch.Generator().manual_seed(seeds.mix(seed, j))
        u = torch.rand(min(SUBSET_BLOCK, b - i), n_subsets, d, generator=g)
        out[i : i + SUBSET_BLOCK].scatter_(2, u.topk(k, dim=2).indices, True)
    return out


def faithfulness_correlation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attributions: Tensor,
    *,
    n_subsets: int = 100,
    subset_fraction: float = 0.2,
    baseline: float = 0.0,
    seed: int = 0,
    subsets: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Tensor:
    """Variant (b), Bhatt et al.: correlation over random subsets (B,).

    Args:
        model: classifier; eval mode, restored.
        x: images (B, 1, 28, 28); y: target class (B,) (the predicted class).
        attributions: maps shaped like ``x``.
        n_subsets, subset_fraction: number and relative size of the random subsets.
        baseline: value the subset's pixels are set to.
        seed: seeds :func:`draw_subsets` (ignored when ``subsets`` is given).
        subsets: optional precomputed bool masks (B, M, d).
        batch_size: images per forward pass (B·M perturbed images in chunks).
    """
    check_batch(x, y, attributions)
    check_batch_size(batch_size)
    y = torch.as_tensor(y).long()
    b, d = x.shape[0], x[0].numel()
    if subsets is None:
        subsets = draw_subsets(b, d, n_subsets, subset_fraction, seed)
    elif subsets.dtype != torch.bool or subsets.dim() != 3 or subsets.shape[0] != b or subsets.shape[2] != d:
        raise ValueError(f"subsets must be a bool tensor (B={b}, M, d={d}), got {subsets.dtype} {tuple(subsets.shape)}")
    m = subsets.shape[1]
    subsets = subsets.to(x.device)
    a = attributions.to(x.device).flatten(1)
    xf = x.reshape(b, d)
    dev = device_of(model)
    yd = y.to(dev)

    def make(i: int, j: int) -> Tensor:
        rows = torch.arange(i, j, device=x.device)
        bi, mi = rows // m, rows % m
        return xf[bi].masked_fill(subsets[bi, mi], float(baseline)).view(j - i, *x.shape[1:]).to(dev)

    with eval_mode(model):
        f0 = forward_chunked(model, b, lambda i, j: x[i:j].to(dev), batch_size).gather(1, yd[:, None])
        fm = forward_chunked(model, b * m, make, batch_size).view(b, m, -1)
        fm = fm.gather(2, yd[:, None, None].expand(b, m, 1))[..., 0]
    mass = masked_sums(subsets, a)
    return pearson(mass.cpu(), (f0.double() - fm.double()).cpu())


def faithfulness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attributions: Tensor,
    *,
    levels: int = 20,
    n_subsets: int = 100,
    subset_fraction: float = 0.2,
    baseline: float = 0.0,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> FaithfulnessResult:
    """Both variants (see the module docstring) for the same inputs."""
    return FaithfulnessResult(
        nested=faithfulness_nested(model, x, y, attributions, levels=levels, baseline=baseline, batch_size=batch_size),
        correlation=faithfulness_correlation(
            model, x, y, attributions, n_subsets=n_subsets, subset_fraction=subset_fraction,
            baseline=baseline, seed=seed, batch_size=batch_size,
        ),
    )


def rows(inp: MetricInput) -> Rows:
    """The registered outputs for :func:`evaluation.evaluate.evaluate_model`: both variants."""
    p, kw = inp.params, {"batch_size": inp.batch_size}
    nested = faithfulness_nested(inp.model, inp.x, inp.target, inp.attributions,
                                 **{k: v for k, v in p.items() if k in ("levels", "baseline")}, **kw)
    corr = faithfulness_correlation(inp.model, inp.x, inp.target, inp.attributions, seed=inp.seed,
                                    **{k: v for k, v in p.items() if k != "levels"}, **kw)
    return [("faithfulness_nested", nested, None), ("faithfulness_correlation", corr, None)]
