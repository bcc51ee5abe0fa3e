"""Square block perturbations: accuracy under occlusion and square-patch infidelity (docs/spec.md §5).

Definition. Per image and draw k = 1..K (``n_draws``), four uniforms u = (u_h, u_r, u_c, u_v)
are drawn once (:func:`draw_blocks`: ``torch.rand((K, B, 4), generator=torch.Generator()
.manual_seed(seed))``) and mapped, for each s_max (:func:`block_geometry`), to one square block:

    half-size h = 2 + ⌊u_h (s_max − 1)⌋ ∈ {2, …, s_max}, side 2h,
    top-left   r = ⌊u_r (H − 2h + 1)⌋, c = ⌊u_c (W − 2h + 1)⌋   (block fully inside),
    fill       v = 0.5 + 0.5 u_v ~ U(0.5, 1)                    (one value for the block).

x̃ = x with the block set to v. Then, per s_max in ``s_max`` (strictly increasing, 2..H/2):

    accuracy(x)   = (1/K) Σ_k 1[argmax f(x̃_k) = label]
    area(x)       = ∫ accuracy d s_max (trapezoid rule over the given s_max values)
    area_clean(x) = the same with the clean point (s_max = 0: no block, accuracy on x) first
    raw infidelity(x)        = (1/K) Σ_k ( L_k − D_k )²
    normalised infidelity(x) = (1/K) Σ_k ( β L_k − D_k )²,  β = Σ_k L_k D_k / Σ_k L_k²  (0 if Σ L² = 0)
    with L_k = Σ_i I_k,i a_i, D_k = f_t(x) − f_t(x̃_k), I_k = x − x̃_k

with f_t the logit of the explained class t (predicted on the clean x by default), one β per
image and s_max. Accuracy and area: higher = more robust model. Infidelity: lower = the
attribution predicts the effect of the patch better. The raw value is Captum's ``infidelity``
with these perturbations and ``normalize=False``; it grows with the square of the maps' scale
(×10 maps: ~×100), so a penalty that shrinks |g| scores better for its scale alone. The
normalised value (Yeh et al. 2019's optimal scaling, Captum's ``normalize=True``) is invariant to
that scale and is the primary value (docs/spec.md §5). It needs K ≥ 2 draws (with K = 1, β fits exactly
and the value is 0).

References
----------
Yeh, Hsieh, Suggala, Inouye, Ravikumar (2019). On the (in)fidelity and sensitivity of
explanations. NeurIPS 2019. (Square-removal infidelity; ``captum.metrics.infidelity``.)
Zeiler, Fergus (2014). Visualizing and understanding convolutional networks. ECCV 2014.
(Occlusion by square patches.)
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
    area_with_clean_point,
    check_batch,
    check_batch_size,
    check_increasing,
    check_positive_int,
    device_of,
    eval_mode,
    forward_chunked,
    generator,
    trapezoid,
    with_clean_point,
)
from evaluation.metrics.registry import REGISTRY

SPEC = REGISTRY["square_block"]  # direction, outputs, parameters, references: evaluation/metrics/registry.py
NAME = SPEC.name
HIGHER_IS_BETTER = SPEC.higher_is_better
OUTPUTS = SPEC.directions()  # reported metric -> higher is better (curve points have no direction)
REFERENCE = SPEC.reference
S_MAX = tuple(SPEC.params["s_max"])


@dataclass(frozen=True)
class BlockResult:
    """``accuracy`` (B, S), ``area`` (B,), the ``s_max`` values (S,) and, when attributions were
    given, ``infidelity`` (B, S); float64 on the CPU."""

    s_max: Tensor
    accuracy: Tensor
    area: Tensor
    infidelity: Tensor | None = None  # raw (scale-dependent)
    infidelity_normalized: Tensor | None = None  # scale-invariant (optimal β), the primary value of docs/spec.md §5
    clean_accuracy: Tensor | None = None  # (B,) no block
    area_clean: Tensor | None = None  # (B,) area including the clean point at s_max = 0


def draw_blocks(n_draws: int, b: int, seed: int = 0) -> Tensor:
    """The uniforms (n_draws, b, 4) = (u_h, u_r, u_c, u_v) that define every block."""
    check_positive_int("n_draws", n_draws)
    return torch.rand((n_draws, b, 4), generator=generator(seed), dtype=torch.float64)


def block_geometry(u: Tensor, s_max: int, height: int = 28, width: int = 28) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(h, r, c, v) for uniforms ``u`` (..., 4): half-size, top-left row/col, fill value."""
    h = (2 + (u[..., 0] * (s_max - 1)).floor()).long().clamp(2, s_max)
    r = (u[..., 1] * (height - 2 * h + 1)).floor().long()
    c = (u[..., 2] * (width - 2 * h + 1)).floor().long()
    v = 0.5 + 0.5 * u[..., 3]
    return h, r, c, v


def block_images(x: Tensor, u: Tensor, s_max: int) -> Tensor:
    """x̃ (K, B, ...): each image with its block (from ``u`` (K, B, 4)) filled with its value."""
    height, width = x.shape[-2:]
    h, r, c, v = (t.to(x.device) for t in block_geometry(u, s_max, height, width))
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    in_r = (rows >= r[..., None]) & (rows < (r + 2 * h)[..., None])  # (K, B, H)
    in_c = (cols >= c[..., None]) & (cols < (c + 2 * h)[..., None])  # (K, B, W)
    mask = (in_r[..., :, None] & in_c[..., None, :]).unsqueeze(2)  # (K, B, 1, H, W)
    fill = v.to(x.dtype).view(*v.shape, *([1] * (x.dim() - 1)))
    return torch.where(mask, fill, x[None])


def check_s_max(values: Sequence[int], height: int = 28, width: int = 28) -> Tensor:
    s = check_increasing("s_max", values)
    hi = min(height, width) // 2
    if (s != s.round()).any() or (s < 2).any() or (s > hi).any():
        raise ValueError(f"s_max values must be integers in 2..{hi} (block side 2·s_max fits the image), "
                         f"got {list(values)!r}")
    return s


def square_block(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attributions: Tensor | None = None,
    *,
    s_max: Sequence[int] = S_MAX,
    n_draws: int = 4,
    seed: int = 0,
    target: Tensor | None = None,
    blocks: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BlockResult:
    """Accuracy with one random square block per image, its area, and square-patch infidelity.

    Args:
        model: classifier; eval mode, restored.
        x: images (B, C, H, W) in [0, 1].
        y: the true labels (B,) (accuracy is measured against them).
        attributions: maps shaped like ``x``; when given, the infidelity is computed.
        s_max: largest half-sizes, strictly increasing integers in 2..min(H, W)/2.
        n_draws: blocks K per image and s_max.
        seed: seeds :func:`draw_blocks` (ignored when ``blocks`` is given).
        target: class whose logit the infidelity uses (B,); default: predicted on the clean x.
        blocks: optional precomputed uniforms (K, B, 4) in [0, 1).
        batch_size: images per forward pass.
    """
    check_batch(x, y, attributions)
    check_batch_size(batch_size)
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    sm = check_s_max(s_max, *x.shape[-2:])
    b = x.shape[0]
    if blocks is None:
        blocks = draw_blocks(n_draws, b, seed)
    elif blocks.dim() != 3 or blocks.shape[1:] != (b, 4) or blocks.shape[0] < 1:
        raise ValueError(f"blocks must have shape (K, {b}, 4), got {tuple(blocks.shape)}")
    k = blocks.shape[0]
    dev = device_of(model)
    labels = torch.as_tensor(y).long().to(dev)
    perturbed = torch.stack([block_images(x, blocks, int(s)) for s in sm.tolist()])  # (S, K, B, ...)
    flat = perturbed.view(-1, *x.shape[1:])
    with eval_mode(model):
        logits = forward_chunked(model, flat.shape[0], lambda i, j: flat[i:j].to(dev), batch_size)
        logits = logits.view(sm.numel(), k, b, -1)
        accuracy = (logits.argmax(-1) == labels).double().mean(1).T.cpu()  # (B, S)
        area = trapezoid(accuracy, sm)
        clean = forward_chunked(model, b, lambda i, j: x[i:j].to(dev), batch_size)
        clean_acc = (clean.argmax(1) == labels).double().cpu()
        area_clean = area_with_clean_point(accuracy, sm, clean_acc)
        if attributions is None:
            return BlockResult(s_max=sm, accuracy=accuracy, area=area, clean_accuracy=clean_acc, area_clean=area_clean)
    t = clean.argmax(1) if target is None else torch.as_tensor(target).long().to(dev)
    f0 = clean.gather(1, t[:, None])[:, 0].double()  # (B,)
    fp = logits.gather(3, t.view(1, 1, b, 1).expand(sm.numel(), k, b, 1))[..., 0].double()  # (S, K, B)
    a = attributions.to(x.device).flatten(1)
    lin = torch.einsum("skbd,bd->skb", (x[None, None] - perturbed).flatten(3), a).double().to(fp.device)
    diff = f0 - fp  # (S, K, B)
    infid = (lin - diff).square().mean(1).T.cpu()
    den = lin.square().sum(1, keepdim=True)
    beta = (lin * diff).sum(1, keepdim=True) / torch.where(den != 0, den, torch.ones_like(den))
    infid_n = (beta * lin - diff).square().mean(1).T.cpu()
    return BlockResult(s_max=sm, accuracy=accuracy, area=area, infidelity=infid, infidelity_normalized=infid_n,
                       clean_accuracy=clean_acc, area_clean=area_clean)


def rows(inp: MetricInput) -> Rows:
    """The registered outputs for :func:`evaluation.evaluate.evaluate_model`: both infidelities of the
    method, and the model-level accuracy curve (with its clean point at s_max = 0) and areas."""
    s = square_block(inp.model, inp.x, inp.labels, inp.attributions, seed=inp.seed, target=inp.target,
                     **inp.params, batch_size=inp.batch_size)
    return [("block_infidelity", s.infidelity_normalized, s.s_max), ("block_infidelity_raw", s.infidelity, s.s_max),
            ("block_accuracy", *with_clean_point(s.accuracy, s.s_max, s.clean_accuracy)),
            ("block_auc", s.area, None), ("block_auc_clean", s.area_clean, None)]
