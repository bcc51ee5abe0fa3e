"""Gaussian perturbations: accuracy under noise and attribution sensitivity (docs/spec.md §5).

Definition. Draw ε_k ~ N(0, I), k = 1..K (``n_draws``) per image, once (:func:`draw_noise`:
``torch.randn((K, *x.shape), generator=torch.Generator().manual_seed(seed))`` on the CPU), and
reuse them for every σ (common random numbers; zero mean — the seed's +1.0 shift is not copied;
no clipping to [0, 1]). For each σ in ``sigmas`` (strictly increasing, ≥ 0):

    accuracy_σ(x)  = (1/K) Σ_k 1[argmax f(x + σ ε_k) = label]
    area(x)        = ∫ accuracy_σ dσ over the given σ's (trapezoid rule; units of σ)
    area_clean(x)  = the same area with the clean point (σ = 0, accuracy on x itself) first,
                     as the seed's curves and docs/spec.md §5 (equals ``area`` when σ_1 = 0)

and, given the attribution method as ``attribute_fn`` (a_σ,k = attribution of x + σ ε_k for
the same target, the class predicted on the clean x by default),

    max_sensitivity_σ(x) = max_k  ‖a_σ,k − a‖₂ / ‖a‖₂
    avg_sensitivity_σ(x) = mean_k ‖a_σ,k − a‖₂ / ‖a‖₂

(Frobenius norms over the pixels; a map of norm 0 is divided by 1, as Captum's
``sensitivity_max``). Accuracy and area: higher = more robust model. Sensitivities: lower =
more stable explanation. σ = 0 gives the clean accuracy and sensitivity 0 for deterministic
methods.

References
----------
Yeh, Hsieh, Suggala, Inouye, Ravikumar (2019). On the (in)fidelity and sensitivity of
explanations. NeurIPS 2019. (Max-sensitivity; ``captum.metrics.sensitivity_max``.)
Bhatt, Weller, Moura (2020). Evaluating and aggregating feature-based model explanations.
IJCAI 2020. (Average sensitivity.)
Hendrycks, Dietterich (2019). Benchmarking neural network robustness to common corruptions
and perturbations. ICLR 2019. (Accuracy under Gaussian noise.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from evaluation.metrics._common import (
    DEFAULT_BATCH_SIZE,
    MetricInput,
    Rows,
    AttributeFn,
    check_batch,
    check_batch_size,
    check_increasing,
    check_positive_int,
    device_of,
    eval_mode,
    forward_chunked,
    generator,
    area_with_clean_point,
    trapezoid,
    with_clean_point,
)
from evaluation.metrics.registry import REGISTRY

SPEC = REGISTRY["gaussian"]  # direction, outputs, parameters, references: evaluation/metrics/registry.py
NAME = SPEC.name
HIGHER_IS_BETTER = SPEC.higher_is_better
OUTPUTS = SPEC.directions()  # reported metric -> higher is better (curve points have no direction)
REFERENCE = SPEC.reference
SIGMAS = tuple(SPEC.params["sigmas"])


@dataclass(frozen=True)
class GaussianResult:
    """``accuracy`` (B, S), ``area`` (B,), the ``sigmas`` (S,) and, when an ``attribute_fn``
    was given, ``max_sensitivity`` / ``avg_sensitivity`` (B, S); float64 on the CPU."""

    sigmas: Tensor
    accuracy: Tensor
    area: Tensor
    max_sensitivity: Tensor | None = None
    avg_sensitivity: Tensor | None = None
    clean_accuracy: Tensor | None = None  # (B,) accuracy at σ = 0 (no noise)
    area_clean: Tensor | None = None  # (B,) area of the curve that starts at (0, clean accuracy)


def draw_noise(n_draws: int, shape: Sequence[int], seed: int = 0) -> Tensor:
    """Standard normal noise (n_draws, *shape) from a CPU generator seeded with ``seed``."""
    check_positive_int("n_draws", n_draws)
    return torch.randn((n_draws, *shape), generator=generator(seed))


def predicted(model: nn.Module, x: Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> Tensor:
    """The predicted class of each image (B,), on x's device."""
    dev = device_of(model)
    with eval_mode(model):
        return forward_chunked(model, x.shape[0], lambda i, j: x[i:j].to(dev), batch_size).argmax(1).to(x.device)


def sensitivity(
    attribute_fn: AttributeFn, x: Tensor, target: Tensor, attributions: Tensor, perturbed: Tensor
) -> Tensor:
    """‖attribute_fn(x̃_k) − a‖₂ / ‖a‖₂ for perturbed inputs (K, B, ...) → (K, B) float64."""
    k, b = perturbed.shape[:2]
    ap = attribute_fn(perturbed.reshape(k * b, *x.shape[1:]), target.repeat(k))
    if ap.shape != (k * b, *x.shape[1:]):
        raise ValueError(f"attribute_fn returned shape {tuple(ap.shape)}, expected {(k * b, *x.shape[1:])}")
    a = attributions.flatten(1).double()
    diff = (ap.reshape(k, b, -1).double().to(a.device) - a[None]).norm(dim=2)
    norm = a.norm(dim=1)
    return diff / torch.where(norm == 0, torch.ones_like(norm), norm)[None]


def gaussian(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attributions: Tensor | None = None,
    *,
    sigmas: Sequence[float] = SIGMAS,
    n_draws: int = 4,
    seed: int = 0,
    attribute_fn: AttributeFn | None = None,
    target: Tensor | None = None,
    noise: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> GaussianResult:
    """Accuracy under N(0, σ²) noise, its area, and (optionally) attribution sensitivity.

    Args:
        model: classifier; eval mode, restored.
        x: images (B, 1, 28, 28) in [0, 1].
        y: the true labels (B,) (accuracy is measured against them).
        attributions: the clean maps a (needed with ``attribute_fn``).
        sigmas: noise standard deviations, strictly increasing, ≥ 0.
        n_draws: noise draws K per image and σ.
        seed: seeds :func:`draw_noise` (ignored when ``noise`` is given).
        attribute_fn: ``fn(x, target) -> maps``, the method that produced ``attributions``;
            when given, the sensitivities are computed (K·B re-attributions per σ).
        target: class explained (B,); default: the class predicted on the clean x.
        noise: optional precomputed standard normal noise (K, *x.shape).
        batch_size: images per forward pass.
    """
    check_batch(x, y, attributions)
    check_batch_size(batch_size)
    sig = check_increasing("sigmas", sigmas, minimum=0.0)
    if noise is None:
        noise = draw_noise(n_draws, x.shape, seed)
    elif noise.dim() != x.dim() + 1 or noise.shape[1:] != x.shape or noise.shape[0] < 1:
        raise ValueError(f"noise must have shape (K, {', '.join(map(str, x.shape))}), got {tuple(noise.shape)}")
    noise = noise.to(x.device, x.dtype)
    k, b, s = noise.shape[0], x.shape[0], sig.numel()
    dev = device_of(model)
    labels = torch.as_tensor(y).long().to(dev)
    sig_x = sig.to(x.device, x.dtype)

    def make(i: int, j: int) -> Tensor:  # row r = (σ index, draw, image)
        r = torch.arange(i, j, device=x.device)
        si, ki, bi = r // (k * b), (r // b) % k, r % b
        scale = sig_x[si].view(-1, *([1] * (x.dim() - 1)))
        return (x[bi] + scale * noise[ki, bi]).to(dev)

    with eval_mode(model):
        pred = forward_chunked(model, s * k * b, make, batch_size).argmax(1).view(s, k, b)
    accuracy = (pred == labels).double().mean(1).T.cpu()  # (B, S)
    area = trapezoid(accuracy, sig)
    clean = (predicted(model, x, batch_size) == labels).double().cpu()
    area_clean = area_with_clean_point(accuracy, sig, clean)
    if attribute_fn is None:
        return GaussianResult(sigmas=sig, accuracy=accuracy, area=area, clean_accuracy=clean, area_clean=area_clean)
    if attributions is None:
        raise ValueError("attribute_fn needs the clean attributions (attributions=None was given)")
    t = predicted(model, x, batch_size) if target is None else torch.as_tensor(target).long().to(x.device)
    sens = torch.stack(
        [sensitivity(attribute_fn, x, t, attributions, x[None] + float(sv) * noise) for sv in sig.tolist()]
    )  # (S, K, B)
    return GaussianResult(
        sigmas=sig, accuracy=accuracy, area=area,
        max_sensitivity=sens.amax(1).T.cpu(), avg_sensitivity=sens.mean(1).T.cpu(),
        clean_accuracy=clean, area_clean=area_clean,
    )


def rows(inp: MetricInput) -> Rows:
    """The registered outputs for :func:`evaluation.evaluate.evaluate_model`: the sensitivities of the
    method, and the model-level accuracy curve (with its clean point at σ = 0) and areas."""
    g = gaussian(inp.model, inp.x, inp.labels, inp.attributions, seed=inp.seed, attribute_fn=inp.attribute_fn,
                 target=inp.target, **inp.params, batch_size=inp.batch_size)
    return [("max_sensitivity", g.max_sensitivity, g.sigmas), ("avg_sensitivity", g.avg_sensitivity, g.sigmas),
            ("gaussian_accuracy", *with_clean_point(g.accuracy, g.sigmas, g.clean_accuracy)),
            ("gaussian_auc", g.area, None), ("gaussian_auc_clean", g.area_clean, None)]
