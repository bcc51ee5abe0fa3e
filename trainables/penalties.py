"""The six saliency penalties and the ``none`` baseline (docs/spec.md §4): loss = CE + λ · R.

Each penalty is a pure, batched, differentiable function ``R(ctx, **params) -> scalar`` of a
:class:`Batch` (inputs, labels, logits and the saliency ``g`` kept in the graph), registered by
name in :data:`PENALTIES`; its hyper-parameters' defaults and checks are torch-free, in
:mod:`trainables.config` (``PENALTY_DEFAULTS``), so that a configuration is validated without
torch. Call them through :func:`penalty`, which validates the parameter names::

    ctx = Batch(model, x, y, logits, g, generator)
    r = penalty("smoothness", ctx)                       # defaults
    r = penalty("symmetry", ctx, angles=("rot90",))      # override a hyper-parameter
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import (  # noqa: F401  (re-exported: the penalties' names, defaults and checks)
    CLASS_RULES, INTERPOLATIONS, ISOMETRIES, PENALTY_DEFAULTS, check_penalty, resolve_penalty_params,
)
from trainables.models import frozen_running_stats
from trainables.saliency import input_gradient, minmax


@dataclass
class Batch:
    """What a penalty may look at in one training step."""

    model: nn.Module
    x: torch.Tensor  # B×1×28×28 in [0, 1]
    y: torch.Tensor  # labels (B,)
    logits: torch.Tensor  # f(x), in the graph
    g: torch.Tensor  # per-sample input gradient of the true-class logit, in the graph
    generator: torch.Generator | None = None  # CPU generator for random choices (symmetry angle)


@dataclass(frozen=True)
class Penalty:
    name: str
    fn: Callable[..., torch.Tensor]
    defaults: dict = field(default_factory=dict)
    doc: str = ""


PENALTIES: dict[str, Penalty] = {}


def register(name: str):
    """Register the function of penalty ``name`` (its defaults: ``trainables.config.PENALTY_DEFAULTS``)."""

    def deco(fn):
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        PENALTIES[check_penalty(name)] = Penalty(name, fn, dict(PENALTY_DEFAULTS[name]), doc)
        return fn

    return deco


def penalty(name: str, ctx: Batch, **params) -> torch.Tensor:
    """Value of penalty ``name`` on ``ctx`` with its hyper-parameters (defaults + ``params``)."""
    return PENALTIES[check_penalty(name)].fn(ctx, **resolve_penalty_params(name, params))


# --------------------------------------------------------------------------- helpers
def _cos_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise cosine similarity of two B×D matrices."""
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)


def _cos_gram(a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """B×B matrix of cosine similarities between the rows of ``a``."""
    n = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    return n @ n.T



def rotate(x: torch.Tensor, angle, interpolation: str = "bilinear") -> torch.Tensor:
    """Rotate B×C×H×W images by ``angle`` degrees about the centre, counter-clockwise, zero fill,
    with ``interpolation`` ``nearest`` (torchvision's default, the seed's) or ``bilinear``; or apply
    an exact isometry. Equals ``torchvision.transforms.functional.rotate`` with the same mode."""
    if angle == "rot90":
        return torch.rot90(x, 1, dims=(2, 3))
    if angle == "rot180":
        return torch.rot90(x, 2, dims=(2, 3))
    if angle == "rot270":
        return torch.rot90(x, 3, dims=(2, 3))
    if angle == "hflip":
        return torch.flip(x, dims=(3,))
    if angle == "vflip":
        return torch.flip(x, dims=(2,))
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r}; valid choices: {', '.join(INTERPOLATIONS)}")
    t = math.radians(float(angle))
    theta = torch.tensor(
        [[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]], dtype=x.dtype, device=x.device
    )
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=interpolation, padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- penalties
@register("none")
def none_penalty(ctx: Batch) -> torch.Tensor:
    """0: the unconstrained baseline."""
    return ctx.logits.new_zeros(())


@register("gradient")
def gradient_penalty(ctx: Batch) -> torch.Tensor:
    """mean |g|: an L1 (Lasso-like) penalty on the attributions."""
    return ctx.g.abs().mean()


@register("consistency")
def consistency_penalty(ctx: Batch, eps: float, class_rule: str) -> torch.Tensor:
    """Σ_{i<j, same class} (1 − cos(ĝ_i, ĝ_j)) / (1 − cos(x_i, x_j) + ε), divided by B.

    Same class means same label (``class_rule="label"``) or same prediction (``"prediction"``,
    the seed's choice). Computed with two B×B Gram matrices.
    """
    b = ctx.x.shape[0]
    cls = ctx.y if class_rule == "label" else ctx.logits.argmax(1)
    pairs = torch.triu(cls.view(-1, 1) == cls.view(1, -1), diagonal=1)
    cg = _cos_gram(minmax(ctx.g).flatten(1))
    cx = _cos_gram(ctx.x.flatten(1))
    ratio = (1.0 - cg) / (1.0 - cx + eps)
    return (ratio * pairs).sum() / b


@register("smoothness")
def smoothness_penalty(ctx: Batch) -> torch.Tensor:
    """Anisotropic total variation of g between true neighbours, averaged over all pixels.

    R = (Σ |g[i+1,j] − g[i,j]| + Σ |g[i,j+1] − g[i,j]|) / (B·H·W): every pixel contributes its
    difference to the pixel below and to the right (none past the border; no wrap-around).
    """
    g = ctx.g
    dv = (g[..., 1:, :] - g[..., :-1, :]).abs().sum()
    dh = (g[..., :, 1:] - g[..., :, :-1]).abs().sum()
    return (dv + dh) / g.numel()


@register("locality")
def locality_penalty(ctx: Batch, s: float) -> torch.Tensor:
    """Binary cross-entropy pulling ĝ towards the input: −mean[x log(ĝ+s) + (1−x) log(1−ĝ+s)]."""
    gh = minmax(ctx.g)
    x = ctx.x
    return -(x * torch.log(gh + s) + (1 - x) * torch.log(1 - gh + s)).mean()


@register("fidelity")
def fidelity_penalty(ctx: Batch, m: float) -> torch.Tensor:
    """max(0, mean_b |cos(f(x), f(x ⊙ (1 − ĝ)))| − m): removing relevant pixels must change f."""
    x_removed = ctx.x * (1 - minmax(ctx.g))
    with frozen_running_stats(ctx.model):
        logits_removed = ctx.model(x_removed)
    return F.relu(_cos_rows(ctx.logits, logits_removed).abs().mean() - m)


def draw_angle(angles, generator: torch.Generator | None):
    """One angle from ``angles``, uniformly, with ``generator`` (seeded by the training loop)."""
    i = int(torch.randint(len(angles), (1,), generator=generator))
    return tuple(angles)[i]


@register("symmetry")
def symmetry_penalty(ctx: Batch, angles, interpolation) -> torch.Tensor:
    """mean_b (1 − |cos(rot_θ(g(x)), g(rot_θ(x)))|), θ drawn per step from ``angles``.

    Angles are degrees (rotation with ``interpolation``: ``nearest``, torchvision's default and the
    seed's, or ``bilinear``; zero fill) or exact isometries (``rot90``, ``rot180``, ``rot270``,
    ``hflip``, ``vflip``).
    """
    theta = draw_angle(angles, ctx.generator)
    with frozen_running_stats(ctx.model):
        _, g_rot_input = input_gradient(ctx.model, rotate(ctx.x, theta, interpolation), ctx.y, create_graph=True)
    rot_g = rotate(ctx.g, theta, interpolation)
    return (1 - _cos_rows(rot_g.flatten(1), g_rot_input.flatten(1)).abs()).mean()


if set(PENALTIES) != set(PENALTY_DEFAULTS):  # a name in trainables/config.py without its function here
    raise ImportError(f"penalties without a function: {sorted(set(PENALTY_DEFAULTS) - set(PENALTIES))}")
