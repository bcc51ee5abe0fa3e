"""MPRT: the model parameter randomisation test, cascading from the top (Adebayo et al. 2018).

Definition. The layers of the model f are its modules that have ``reset_parameters`` (``named_modules``
order; for cnn3b: conv ``0``, conv ``3``, linear ``7``; for cnn4b the BatchNorms count too, and their
``reset_parameters`` is deterministic: weight 1, bias 0, running statistics 0 and 1), taken from the
output towards the input: ℓ_1 = the last, …, ℓ_L = the first. On a deep copy of f, for
k = 1..L cumulatively,

    f_k  = f_{k−1} with layer ℓ_k re-initialised: torch.manual_seed(seed + 1); ℓ_k.reset_parameters()
    a_k  = the SAME attribution method, parameters and seed, on the same images towards the same
           targets, computed with f_k (f_0 = f gives the evaluated maps a)

and, per image, after Quantus' preprocessing m ↦ |m / max|m|| (``abs=True``, ``normalise=True``,
``normalise_by_max``; per image here, see below):

    mprt_spearman_k = Spearman rank correlation of the d pixels of a and a_k (average ranks of ties)
    mprt_ssim_k     = SSIM of a and a_k as Quantus computes it inside MPRT: on the FLATTENED maps
                      (raster order, a 1-D signal of d values), skimage's structural_similarity with a
                      uniform window of 7, K1 = 0.01, K2 = 0.03, sample covariance, data range
                      max − min over both maps, mean over the positions whose window fits

level k = number of layers randomised (1..L, top-down). Lower = better: a map that changes when the
model's weights are destroyed depends on what the model learned; similarity 1 at every k means the
map ignores the model (an edge detector would pass unchanged). The ``random`` control is such a map:
it is drawn from ``seed`` alone, so a_k = a and both similarities are 1 at every level.

Randomisation reproduces ``quantus.PyTorchModel.get_random_layer_generator(order="top_down", seed)``
(Quantus 0.6.0): the same layers, the same order, the same ``torch.manual_seed(seed + 1)`` before each
``reset_parameters()``; so, with the same maps, the values equal ``quantus.MPRT(seed=seed)``'s (to
~1e-7, tests/evaluation/test_mprt.py). Differences from Quantus, on purpose:

- the re-initialisation draws come from the CPU generator (each layer is reset on a CPU copy and copied
  back), so the randomised model is the same on every device, and the caller's RNG state is untouched
  (Quantus reseeds the global RNG and draws on the model's device);
- each map is normalised by its own max|m|: Quantus' default ``normalise_by_max`` divides by the max
  over its whole batch (the evaluated maps: all images given; the randomised maps: each batch of
  ``batch_size``), which makes an image's SSIM depend on the other images of the batch (Spearman does
  not depend on the scale). Per image, the values equal Quantus' with
  ``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}``, and Quantus' defaults for one image at a time;
- a Spearman correlation with a constant map (undefined; NaN in scipy) is 0, as the other correlations
  of this package; the SSIM of two identical constant maps (data range 0; NaN in skimage) is 1.

Cost: the maps are recomputed L times (cnn3b: 3, cnn4b: 6) — L times the attribution cost of the
method — which is why the group is opt-in (``evaluation.metrics: [..., mprt]``). The seed is the
evaluation's (per chunk in the stage), so every model of a chunk is randomised with the same draws.

References
----------
Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim (2018). Sanity checks for saliency maps. NeurIPS 2018,
9505–9515. (Cascading randomisation, Spearman rank correlation and SSIM.)
Hedström, Weber, Krakowczyk, Bareeva, Motzkus, Samek, Lapuschkin, Höhne (2023). Quantus: an explainable
AI toolkit for responsible evaluation of neural network explanations and beyond. JMLR 24(34), 1–11.
(``quantus.MPRT``, whose randomisation, preprocessing and SSIM are reproduced here.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from evaluation.attributions import attribute, check_method
from evaluation.metrics._common import MetricInput, Rows, check_batch, pearson
from evaluation.metrics.registry import REGISTRY

SPEC = REGISTRY["mprt"]  # direction, outputs, parameters, references: evaluation/metrics/registry.py
NAME = SPEC.name
HIGHER_IS_BETTER = SPEC.higher_is_better
OUTPUTS = SPEC.directions()  # reported metric -> higher is better
REFERENCE = SPEC.reference
WIN_SIZE, K1, K2 = 7, 0.01, 0.03  # skimage.metrics.structural_similarity's defaults (Quantus passes none)


@dataclass(frozen=True)
class MPRTResult:
    """``spearman`` and ``ssim`` (B, L) float64 on the CPU at ``levels`` (L,) = 1..L, the number of layers
    randomised; ``layers``: their names (``named_modules``), top layer first."""

    layers: tuple[str, ...]
    levels: Tensor
    spearman: Tensor
    ssim: Tensor


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The randomised layers, top-down: the modules with ``reset_parameters`` (Quantus' choice), last first;
    ValueError if there are none."""
    found = [(n, m) for n, m in model.named_modules() if hasattr(m, "reset_parameters")]
    if not found:
        raise ValueError(f"mprt: the model ({type(model).__name__}) has no layer to randomise "
                         "(no module with parameters and reset_parameters)")
    return found[::-1]


def randomised_models(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield (layer name, copy of ``model``) with one more layer re-initialised each time, top-down (the same
    copy, modified in place). Each layer is reset on a CPU copy after ``torch.manual_seed(seed + 1)`` (inside
    ``fork_rng``: the caller's RNG is untouched) and its state copied back: the draws of
    ``quantus.PyTorchModel.get_random_layer_generator("top_down", seed)`` on a CPU model, on any device."""
    twin = copy.deepcopy(model)
    for name, layer in layers(twin):
        cpu = copy.deepcopy(layer).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + 1)
            cpu.reset_parameters()
        layer.load_state_dict(cpu.state_dict())
        yield name, twin


def preprocess(a: Tensor) -> Tensor:
    """Quantus' default preprocessing per image: |a / max|a|| (``normalise_by_max``, then ``abs``), flattened
    to (B, d), in a's float dtype; an all-zero map stays zero."""
    a = a.flatten(1)
    m = a.abs().amax(1, keepdim=True)
    return (a / torch.where(m > 0, m, torch.ones_like(m))).abs()


def average_ranks(v: Tensor) -> Tensor:
    """Ranks 1..d along the last dim with ties given their average rank (``scipy.stats.rankdata``), float64;
    batched: one sort, no loop over rows."""
    s, order = v.sort(dim=-1, stable=True)
    d = v.shape[-1]
    pos = torch.arange(d, device=v.device).expand_as(s)
    first = torch.ones_like(s, dtype=torch.bool)
    first[..., 1:] = s[..., 1:] != s[..., :-1]  # a new value starts a tie group
    last = torch.ones_like(first)
    last[..., :-1] = first[..., 1:]
    start = torch.where(first, pos, torch.zeros_like(pos)).cummax(-1).values
    end = torch.where(last, pos, torch.full_like(pos, d)).flip(-1).cummin(-1).values.flip(-1)
    avg = (start + end).double() / 2 + 1
    return torch.empty_like(avg).scatter_(-1, order, avg)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each row of (B, d) ``a`` and ``b`` (B,) float64; 0 where a side is constant."""
    return pearson(average_ranks(a), average_ranks(b))


def _window_mean(v: Tensor, win: int) -> Tensor:
    """Mean of each full window of ``win`` along the last dim, summed in float64 and rounded to v's dtype
    (scipy's ``uniform_filter`` accumulates in double and stores the input's dtype); only the positions that
    skimage keeps after cropping (win − 1)/2 on each side."""
    return (v.double().unfold(-1, win, 1).sum(-1) / win).to(v.dtype)


def ssim_flat(a: Tensor, b: Tensor, win: int = WIN_SIZE, k1: float = K1, k2: float = K2) -> Tensor:
    """SSIM of each row of (B, d) ``a`` and ``b`` as 1-D signals (B,) float64: per row,
    ``skimage.metrics.structural_similarity(a_i, b_i, data_range=max − min of both rows)``, uniform window
    ``win``, sample covariance — what ``quantus.similarity_func.ssim`` returns on MPRT's flattened maps.
    Batched over rows, in skimage's float dtype and order of operations (float32 maps: float32 arithmetic,
    as skimage) so the values agree to rounding. Two identical constant rows (data range 0) give 1."""
    if a.shape != b.shape or a.dim() != 2 or a.shape[1] < win:
        raise ValueError(f"ssim_flat: needs two (B, d) maps with d >= {win}, got {tuple(a.shape)} and {tuple(b.shape)}")
    dt = torch.promote_types(a.dtype, torch.float32)  # skimage's _supported_float_type
    a, b = a.to(dt), b.to(dt)
    both = torch.cat([a, b], 1)
    r = (both.amax(1) - both.amin(1)).abs().double()
    c1 = ((k1 * r) ** 2).to(dt)[:, None]  # (K1 R)² in Python floats, then the array's dtype
    c2 = ((k2 * r) ** 2).to(dt)[:, None]
    cov_norm = torch.tensor(win / (win - 1), dtype=dt, device=a.device)
    two = torch.tensor(2.0, dtype=dt, device=a.device)
    ux, uy = _window_mean(a, win), _window_mean(b, win)
    uxx, uyy, uxy = _window_mean(a * a, win), _window_mean(b * b, win), _window_mean(a * b, win)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    a1, a2 = two * ux * uy + c1, two * vxy + c2
    b1, b2 = ux * ux + uy * uy + c1, vx + vy + c2
    s = (a1 * a2) / (b1 * b2)
    return torch.where(r > 0, s.double().mean(1), torch.ones_like(r))


def mprt(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attributions: Tensor,
    *,
    method: str,
    seed: int = 0,
    attribute_kwargs: dict[str, Any] | None = None,
) -> MPRTResult:
    """Similarity of each image's map to the maps of the cascadingly randomised model (top-down).

    Args:
        model: the evaluated classifier (left unchanged; a deep copy is randomised).
        x: images (B, 1, 28, 28).
        y: the explained class per image (B,) (the target of ``attributions``).
        attributions: ``method``'s maps of ``model`` for x towards y, shaped like x.
        method: the attribution method (:data:`evaluation.attributions.METHODS`), recomputed after each layer.
        seed: seeds the re-initialisation (``torch.manual_seed(seed + 1)`` per layer, as Quantus' ``seed``).
        attribute_kwargs: the other keywords that produced ``attributions`` (``batch_size``, ``seed``, the
            method's parameters, ``baselines``); ``seed`` defaults to ``seed``.
    """
    check_batch(x, y, attributions)
    check_method(method)
    kwargs = {"seed": seed, **(attribute_kwargs or {})}
    layers(model)  # ValueError before any work if there is nothing to randomise
    original = preprocess(attributions)
    names, sp, ss = [], [], []
    for name, random_model in randomised_models(model, seed):
        a_k = preprocess(attribute(random_model, x, y, method=method, **kwargs).to(attributions.device))
        names.append(name)
        sp.append(spearman(original, a_k))
        ss.append(ssim_flat(original, a_k))
    return MPRTResult(
        layers=tuple(names), levels=torch.arange(1, len(names) + 1, dtype=torch.float64),
        spearman=torch.stack(sp, 1).cpu(), ssim=torch.stack(ss, 1).cpu(),
    )


def rows(inp: MetricInput) -> Rows:
    """The registered outputs for :func:`evaluation.evaluate.evaluate_model`: (B, L) per layer randomised."""
    if not inp.method:
        raise ValueError("mprt: needs the attribution method by name (MetricInput.method) to recompute its maps "
                         "on the randomised model")
    r = mprt(inp.model, inp.x, inp.target, inp.attributions, method=inp.method, seed=inp.seed,
             attribute_kwargs=inp.attribute_kwargs, **inp.params)
    return [("mprt_spearman", r.spearman, r.levels), ("mprt_ssim", r.ssim, r.levels)]
