"""Complexity: entropy of the normalised absolute attribution (docs/spec.md §5).

Definition. For each image, P_i = |a_i| / Σ_j |a_j| over its d pixels and

    complexity = −Σ_i P_i ln(P_i + 1e-12)

(in nats; 0 for a one-hot map, ln d for a uniform one, ln 784 ≈ 6.66 on MNIST). Lower = simpler
(more concentrated) explanation. Computed per image over the whole evaluation set; the seed's
+0.01 inside the log and its single image are not copied. A map that is zero everywhere has no
distribution: it is a ValueError naming the samples, never a NaN.

``complexity_seed`` is the original study's formula, −Σ_i P_i ln(P_i + 0.01), kept only to put this
study beside the original's published numbers (docs/results.md): the +0.01 lowers the entropy of a
784-pixel map from at most 6.66 to about 4.5, so only its orderings mean anything.

References
----------
Bhatt, Weller, Moura (2020). Evaluating and aggregating feature-based model explanations.
IJCAI 2020, 3016–3022. (Implemented identically as ``quantus.Complexity``.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from evaluation.metrics._common import MetricInput, Rows, check_batch
from evaluation.metrics.registry import REGISTRY

SPEC = REGISTRY["complexity"]  # direction, outputs, parameters, references: evaluation/metrics/registry.py
NAME = SPEC.name
HIGHER_IS_BETTER = SPEC.higher_is_better
OUTPUTS = SPEC.directions()  # reported metric -> higher is better (curve points have no direction)
REFERENCE = SPEC.reference
EPS = 1e-12
SEED_EPS = 0.01  # the original's constant inside the log (complexity_seed only)


def entropy(attributions: Tensor, eps: float = EPS) -> Tensor:
    """−Σ P ln(P + eps) per sample (float64, (B,)); ValueError for an all-zero map."""
    a = attributions.flatten(1).double().abs()
    total = a.sum(1, keepdim=True)
    if (total == 0).any():
        bad = (total[:, 0] == 0).nonzero().flatten().tolist()
        raise ValueError(f"complexity is undefined for an all-zero attribution map (samples {bad[:10]})")
    p = a / total
    return -(p * torch.log(p + eps)).sum(1)


def complexity(
    model: nn.Module | None, x: Tensor, y: Tensor, attributions: Tensor, *, seed: int = 0
) -> Tensor:
    """Entropy of each attribution map (B,) as float64 on the attributions' device.

    Args:
        model, seed: unused (kept for the common metric signature).
        x, y: the images and targets, only checked against ``attributions``.
        attributions: maps shaped like ``x``; finite.
    """
    check_batch(x, y, attributions)
    return entropy(attributions)


def rows(inp: MetricInput) -> Rows:
    """The registered output for :func:`evaluation.evaluate.evaluate_model`."""
    c = complexity(inp.model, inp.x, inp.target, inp.attributions, **inp.params)
    return [("complexity", c, None), ("complexity_seed", entropy(inp.attributions, SEED_EPS), None)]
