"""The original study's other Captum methods: DeepLift, DeepLiftShap, LRP, KernelShap, Occlusion, GradCAM.

:func:`evaluation.attributions.attribute` calls :func:`build` for a batched ``fn(xb, tb)`` and the
number of images per Captum call, or :func:`kernel_shap` (Captum fits one linear model per image).
The parameter checks (:func:`check_values`) need no torch: the configuration runs them.

- ``deeplift``: Captum ``DeepLift``, baseline 0.
- ``deeplift_shap``: Captum ``DeepLiftShap`` over ``n_baselines`` training images drawn by
  :func:`draw_baselines` (seeded; the evaluation stage draws them once, with the evaluation seed).
- ``lrp``: Captum ``LRP`` (its default epsilon rules) on a copy of the model. Captum matches rules by
  exact type; two layers of this project get one it holds by inheritance: ``nn.Flatten`` (a reshape:
  the epsilon rule passes every element's relevance through unchanged) and
  :class:`trainables.models.BatchNorm2d` (an ``nn.BatchNorm2d``, identical in eval mode). Any other
  layer without a rule is refused, naming it (:func:`lrp_rules`).
- ``kernel_shap``: Captum ``KernelShap``, baseline 0, feature mask of ``superpixel``² squares,
  ``n_samples`` coalitions per image from torch's global generator seeded with
  ``seeds.mix(seed, i, bits=62)`` (i: the image's position in ``x``) inside ``fork_rng``.
- ``occlusion``: Captum ``Occlusion``, a ``window``² patch set to 0, moved by ``stride``.
- ``grad_cam``: Captum ``LayerGradCam`` on the first ``nn.Conv2d``, upsampled to the input with
  ``LayerAttribution.interpolate`` (``interpolate_mode``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from torch import Tensor, nn

IMAGE_SIDE = 28  # MNIST and Fashion-MNIST: the configuration checks the superpixels against it
INTERPOLATE_MODES = ("nearest", "bilinear")

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "deeplift": {},
    "deeplift_shap": {"n_baselines": 16},
    "lrp": {},
    "kernel_shap": {"superpixel": 4, "n_samples": 200},
    "occlusion": {"window": 4, "stride": 2},
    "grad_cam": {"interpolate_mode": "nearest"},
}


def _int_ge(method: str, key: str, v: Any, low: int, high: int | None = None) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{method}: {key} must be an integer {bound}, got {v!r}")


def tiling_sides(side: int = IMAGE_SIDE) -> list[int]:
    """Superpixel sides that tile a ``side``² image into at least two squares."""
    return [s for s in range(1, side) if side % s == 0]


def check_values(method: str, p: dict[str, Any], side: int = IMAGE_SIDE) -> None:
    """ValueError (one line) for a bad value of one of the new methods' parameters."""
    if method == "deeplift_shap":
        _int_ge(method, "n_baselines", p["n_baselines"], 2)
    elif method == "kernel_shap":
        s = p["superpixel"]
        if not isinstance(s, int) or isinstance(s, bool) or s not in tiling_sides(side):
            raise ValueError(f"kernel_shap: superpixel {s!r} does not tile the {side}x{side} image into squares; "
                             f"valid choices: {', '.join(map(str, tiling_sides(side)))}")
        _int_ge(method, "n_samples", p["n_samples"], 2)
    elif method == "occlusion":
        _int_ge(method, "window", p["window"], 1, side)
        _int_ge(method, "stride", p["stride"], 1, side)
    elif method == "grad_cam" and p["interpolate_mode"] not in INTERPOLATE_MODES:
        raise ValueError(f"grad_cam: interpolate_mode {p['interpolate_mode']!r}; "
                         f"valid choices: {', '.join(INTERPOLATE_MODES)}")


def draw_baselines(images: Tensor, n: int, seed: int) -> Tensor:
    """DeepLiftShap's baseline distribution: ``n`` images of ``images`` (uint8 N×H×W as the splits hold them,
    or float N×1×H×W in [0, 1]) at ``seeds.subset(len(images), n, seed)``, as float n×1×H×W in [0, 1]."""
    import torch

    from foundations import seeds
    from foundations.data import to_float

    picked = images[seeds.subset(len(images), n, seed)]
    return to_float(picked) if picked.dtype == torch.uint8 else picked.float()


def feature_mask(side: int, superpixel: int) -> Tensor:
    """(1, 1, side, side) long mask numbering the ``superpixel``² squares row by row."""
    import torch

    if side % superpixel:
        raise ValueError(f"kernel_shap: superpixel {superpixel} does not tile the {side}x{side} image; "
                         f"valid choices: {', '.join(map(str, tiling_sides(side)))}")
    r = torch.arange(side) // superpixel
    return (r[:, None] * (side // superpixel) + r[None, :]).view(1, 1, side, side)


def lrp_rules(model: nn.Module) -> None:
    """Attach Captum's rule to every leaf layer of ``model`` that Captum's exact-type table misses but holds
    by inheritance (and ``nn.Flatten``); ValueError naming the first layer with no rule at all."""
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
    from captum.attr._utils.lrp_rules import EpsilonRule
    from torch import nn

    for name, layer in model.named_modules():
        if list(layer.children()) or hasattr(layer, "rule"):
            continue
        kind = type(layer)
        if kind in SUPPORTED_LAYERS_WITH_RULES or kind in SUPPORTED_NON_LINEAR_LAYERS:
            continue
        if isinstance(layer, nn.Flatten):
            layer.rule = EpsilonRule()  # a reshape: relevance / output * input = relevance
            continue
        base = next((b for b in SUPPORTED_LAYERS_WITH_RULES if isinstance(layer, b)), None)
        if base is None:
            known = sorted({t.__name__ for t in (*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS)})
            raise ValueError(f"lrp: layer {name!r} ({kind.__name__}) has no LRP rule in Captum; LRP supports: "
                             f"{', '.join(known)}, Flatten")
        layer.rule = SUPPORTED_LAYERS_WITH_RULES[base]()


def first_conv(model: nn.Module) -> nn.Module:
    from torch import nn

    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("grad_cam: the model has no Conv2d layer")
    return conv


def build(model: nn.Module, method: str, p: dict[str, Any], batch_size: int,
          baselines: Tensor | None) -> tuple[Callable[[Tensor, Tensor], Tensor], int]:
    """(``fn(xb, tb) -> maps``, images per call) of a batched method (all but ``kernel_shap``)."""
    import copy

    from captum.attr import LRP, DeepLift, DeepLiftShap, LayerAttribution, LayerGradCam, Occlusion

    if method == "deeplift":
        algo = DeepLift(model)
        return (lambda xb, tb: algo.attribute(xb, baselines=0.0, target=tb)), max(1, batch_size // 2)
    if method == "deeplift_shap":
        if baselines is None:
            raise ValueError("deeplift_shap: needs its baseline distribution (baselines=, e.g. "
                             "evaluation.captum_methods.draw_baselines(training images, n_baselines, seed))")
        if baselines.dim() < 2 or baselines.shape[0] != p["n_baselines"]:
            raise ValueError(f"deeplift_shap: baselines must hold n_baselines={p['n_baselines']} images, "
                             f"got shape {tuple(baselines.shape)}")
        algo = DeepLiftShap(model)
        ref = baselines.to(_device(model)).float()
        return (lambda xb, tb: algo.attribute(xb, baselines=ref, target=tb)), max(1, batch_size // len(ref))
    if method == "lrp":
        twin = copy.deepcopy(model).eval()  # Captum leaves its rules on the layers: never on the caller's model
        lrp_rules(twin)  # refuses an unsupported layer before any attribution
        algo = LRP(twin)

        def lrp(xb, tb):
            lrp_rules(twin)  # Captum removes the rules after each call
            return algo.attribute(xb, target=tb)

        return lrp, batch_size
    if method == "occlusion":
        w, s = int(p["window"]), int(p["stride"])
        algo = Occlusion(model)
        per_eval = 16  # occluded copies per forward pass: chunk x per_eval = batch_size images
        return (lambda xb, tb: algo.attribute(
            xb, sliding_window_shapes=(xb.shape[1], w, w), strides=(xb.shape[1], s, s), baselines=0.0, target=tb,
            perturbations_per_eval=per_eval,
        )), max(1, batch_size // per_eval)
    if method == "grad_cam":
        algo = LayerGradCam(model, first_conv(model))
        mode = p["interpolate_mode"]
        return (lambda xb, tb: LayerAttribution.interpolate(
            algo.attribute(xb, target=tb), tuple(xb.shape[-2:]), interpolate_mode=mode,
        ).expand_as(xb)), batch_size
    raise ValueError(f"{method}: not one of {', '.join(DEFAULT_PARAMS)}")


def _device(model: nn.Module):
    import torch

    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def kernel_shap(model: nn.Module, x: Tensor, t: Tensor, p: dict[str, Any], seed: int, batch_size: int) -> Tensor:
    """KernelShap maps of ``x`` (B, C, H, W): one Captum call per image (Captum fits one linear model per
    image either way), its ``n_samples`` coalitions evaluated ``batch_size`` at a time, image i's draws
    seeded with ``seeds.mix(seed, i, bits=62)``; torch's global RNG is left as it was."""
    import torch
    from captum.attr import KernelShap

    from foundations import seeds

    mask = feature_mask(x.shape[-1], int(p["superpixel"])) if x.shape[-1] == x.shape[-2] else None
    if mask is None:
        raise ValueError(f"kernel_shap: needs square images, got {tuple(x.shape[-2:])}")
    dev = _device(model)
    mask = mask.expand(1, *x.shape[1:]).to(dev)
    algo = KernelShap(model)
    n = int(p["n_samples"])
    out = torch.empty_like(x)
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for i in range(x.shape[0]):  # Captum's own loop over examples, made explicit to seed each
            torch.manual_seed(seeds.mix(seed, i, bits=62))
            a = algo.attribute(x[i : i + 1].to(dev), baselines=0.0, target=t[i : i + 1].to(dev), feature_mask=mask,
                               n_samples=n, perturbations_per_eval=max(1, min(n, batch_size)))
            out[i : i + 1] = a.detach().to(x.device)
    return out


def extra_inputs(method: str, train_images: Tensor, params: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """The keywords :func:`evaluation.attributions.attribute` needs beyond the method's parameters:
    ``deeplift_shap``'s ``baselines`` drawn from ``train_images`` with ``seed``; nothing for the others."""
    if method != "deeplift_shap":
        return {}
    n = int({**DEFAULT_PARAMS[method], **(params or {})}["n_baselines"])
    return {"baselines": draw_baselines(train_images, n, seed)}
