"""The six saliency penalties and the ``none`` baseline (SPEC §4): loss = CE + λ · R.

Each penalty is a pure, batched, differentiable function ``R(ctx, **params) -> scalar`` of a
:class:`Batch` (inputs, labels, logits and the saliency ``g`` kept in the graph), registered by
name in :data:`PENALTIES` together with its default hyper-parameters. Call them through
:func:`penalty`, which validates the parameter names::

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

from trainables.models import frozen_running_stats
from trainables.saliency import input_gradient, minmax

ISOMETRIES = ("rot90", "rot180", "rot270", "hflip", "vflip")
CLASS_RULES = ("label", "prediction")


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


def register(name: str, **defaults):
    def deco(fn):
        PENALTIES[name] = Penalty(name, fn, dict(defaults), (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def check_penalty(name: str) -> str:
    if name not in PENALTIES:
        raise ValueError(f"unknown penalty {name!r}; valid choices: {', '.join(PENALTIES)}")
    return name


def resolve_penalty_params(name: str, params: dict | None = None) -> dict:
    """Defaults of ``name`` overridden by ``params``; unknown or invalid values are errors."""
    pen = PENALTIES[check_penalty(name)]
    params = dict(params or {})
    unknown = set(params) - set(pen.defaults)
    if unknown:
        valid = ", ".join(pen.defaults) or "none"
        raise ValueError(f"penalty {name!r} has no parameter(s) {sorted(unknown)}; valid: {valid}")
    out = {**pen.defaults, **params}
    _validate(name, out)
    return out


def _validate(name: str, p: dict) -> None:
    for key in ("eps", "s", "m"):
        if key in p and not (isinstance(p[key], (int, float)) and p[key] >= 0):
            raise ValueError(f"penalty {name!r}: {key} must be a number >= 0, got {p[key]!r}")
    if "class_rule" in p and p["class_rule"] not in CLASS_RULES:
        raise ValueError(f"penalty {name!r}: class_rule {p['class_rule']!r}; valid: {', '.join(CLASS_RULES)}")
    if "interpolation" in p and p["interpolation"] not in INTERPOLATIONS:
        raise ValueError(
            f"penalty {name!r}: interpolation {p['interpolation']!r}; valid choices: {', '.join(INTERPOLATIONS)}"
        )
    if "angles" in p:
        angles = tuple(p["angles"])
        if not angles:
            raise ValueError(f"penalty {name!r}: angles must not be empty")
        for a in angles:
            if not (isinstance(a, (int, float)) or a in ISOMETRIES):
                raise ValueError(f"penalty {name!r}: angle {a!r} is neither degrees nor one of {', '.join(ISOMETRIES)}")


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


INTERPOLATIONS = ("nearest", "bilinear")


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


@register("consistency", eps=1e-3, class_rule="label")
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


@register("locality", s=0.01)
def locality_penalty(ctx: Batch, s: float) -> torch.Tensor:
    """Binary cross-entropy pulling ĝ towards the input: −mean[x log(ĝ+s) + (1−x) log(1−ĝ+s)]."""
    gh = minmax(ctx.g)
    x = ctx.x
    return -(x * torch.log(gh + s) + (1 - x) * torch.log(1 - gh + s)).mean()


@register("fidelity", m=0.1)
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


@register("symmetry", angles=(5.0, 10.0, 15.0, 20.0), interpolation="nearest")
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
