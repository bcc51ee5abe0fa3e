"""Post-hoc attribution maps over Captum (docs/spec.md §5).

``attribute(model, x, target, method)`` returns a map with the shape of ``x`` for every image,
computed in chunks of ``batch_size`` images on the model's device, with the model in eval mode
(its mode is restored afterwards). Methods:

- ``saliency``: |∂f_t(x)/∂x| (Captum ``Saliency``, ``abs=True``, as the seed).
- ``integrated_gradients``: Captum ``IntegratedGradients`` with baseline 0 (``n_steps``,
  default 50, Gauss–Legendre as Captum's default).
- ``input_x_gradient``: x ⊙ ∂f_t(x)/∂x (Captum ``InputXGradient``).
- ``smoothgrad``: Captum ``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"``
  (``nt_samples``, default 10; ``stdevs``, default 0.15, in pixel units of the [0, 1] inputs);
  its Gaussian noise comes from torch's global generator, so it is drawn inside
  ``torch.random.fork_rng`` seeded from ``seed`` (the result then depends on ``seed`` and
  ``batch_size``, never on outside RNG state, and outside RNG state is left untouched).
- ``deeplift``, ``deeplift_shap``, ``lrp``, ``kernel_shap``, ``occlusion``, ``grad_cam``: the original
  study's other Captum methods, see :mod:`evaluation.captum_methods`.
- ``random``: i.i.d. U(0, 1) per pixel from ``torch.Generator().manual_seed(seed)`` on the CPU
  (identical on every device); the control ranking for ROAR/MoRF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by the functions that compute: the names and checks need none
    import torch
    from torch import Tensor, nn

from evaluation import captum_methods

METHODS = ("saliency", "integrated_gradients", "input_x_gradient", "smoothgrad", *captum_methods.DEFAULT_PARAMS,
           "random")

# Defaults of each method's parameters; any other keyword is an error.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "saliency": {},
    "integrated_gradients": {"n_steps": 50},
    "input_x_gradient": {},
    "smoothgrad": {"nt_samples": 10, "stdevs": 0.15},
    **captum_methods.DEFAULT_PARAMS,
    "random": {},
}


def check_method(method: str) -> str:
    """Return ``method`` or raise ValueError listing the valid ones."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid choices: {', '.join(METHODS)}")
    return method


def resolve_method_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The method's defaults updated with ``params``; unknown keys are a ValueError."""
    check_method(method)
    allowed = DEFAULT_PARAMS[method]
    bad = sorted(set(params) - set(allowed))
    if bad:
        valid = ", ".join(allowed) or "none"
        raise ValueError(f"attribution method {method!r}: unknown parameter(s) {bad}; valid: {valid}")
    out = {**allowed, **params}
    if method in captum_methods.DEFAULT_PARAMS:
        captum_methods.check_values(method, out)
    return out


def _device(model: nn.Module) -> torch.device:
    import torch

    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _targets(target: Tensor | int, n: int) -> Tensor:
    import torch

    t = torch.as_tensor(target)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"target must be an int or a (B,) tensor with B={n}, got shape {tuple(t.shape)}")
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"target must hold integer class indices, got dtype {t.dtype}")
    return t.long()


def attribute(
    model: nn.Module,
    x: Tensor,
    target: Tensor | int,
    method: str,
    *,
    batch_size: int = 256,
    seed: int = 0,
    baselines: Tensor | None = None,
    **params: Any,
) -> Tensor:
    """Attribution maps of ``model`` for ``x`` towards class ``target``.

    Args:
        model: maps B×1×28×28 inputs to B×C logits; put in eval mode, mode restored afterwards.
        x: float inputs (B, ...) on any device; moved to the model's device chunk by chunk.
        target: class index per sample, (B,) integer tensor or one int for all.
        method: one of :data:`METHODS`.
        batch_size: inputs per forward/backward pass, expansions included: IG and SmoothGrad
            expand each image ``n_steps``/``nt_samples`` times, so they take
            ``max(1, batch_size // n_steps)`` (resp. ``// nt_samples``) images per Captum call.
        seed: seeds ``smoothgrad`` noise, ``kernel_shap`` coalitions and the ``random`` map; ignored by the others.
        baselines: ``deeplift_shap``'s baseline distribution (``n_baselines`` images,
            :func:`evaluation.captum_methods.draw_baselines`); ignored by the others.
        **params: method parameters, see :data:`DEFAULT_PARAMS`.

    Returns:
        A detached float tensor shaped like ``x``, on ``x``'s device.
    """
    import torch

    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    p = resolve_method_params(method, params)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = x.shape[0]
    t = _targets(target, n)
    if method == "random":
        g = torch.Generator().manual_seed(int(seed))
        return torch.rand(x.shape, generator=g, dtype=x.dtype).to(x.device)

    for key in ("n_steps", "nt_samples"):
        if key in p and (not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 1):
            raise ValueError(f"{method}: {key} must be an integer >= 1, got {p[key]!r}")
    if "stdevs" in p and not (isinstance(p["stdevs"], (int, float)) and p["stdevs"] >= 0):
        raise ValueError(f"{method}: stdevs must be a number >= 0, got {p['stdevs']!r}")
    dev = _device(model)
    chunk = batch_size
    was_training = model.training
    model.eval()
    try:
        if method == "kernel_shap":
            return captum_methods.kernel_shap(model, x, t, p, int(seed), batch_size)
        if method in captum_methods.DEFAULT_PARAMS:
            fn, chunk = captum_methods.build(model, method, p, batch_size, baselines)
        elif method == "saliency":
            algo = Saliency(model)
            fn = lambda xb, tb: algo.attribute(xb, target=tb, abs=True)  # noqa: E731
        elif method == "integrated_gradients":
            algo = IntegratedGradients(model)
            fn = lambda xb, tb: algo.attribute(  # noqa: E731
                xb, baselines=0.0, target=tb, n_steps=int(p["n_steps"])
            )
            chunk = max(1, batch_size // int(p["n_steps"]))
        elif method == "input_x_gradient":
            algo = InputXGradient(model)
            fn = lambda xb, tb: algo.attribute(xb, target=tb)  # noqa: E731
        else:  # smoothgrad
            algo = NoiseTunnel(Saliency(model))
            fn = lambda xb, tb: algo.attribute(  # noqa: E731
                xb, nt_type="smoothgrad", nt_samples=int(p["nt_samples"]), stdevs=float(p["stdevs"]),
                target=tb, abs=True,
            )
            chunk = max(1, batch_size // int(p["nt_samples"]))
        out = torch.empty_like(x)
        devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            for i in range(0, n, chunk):
                xb = x[i : i + chunk].to(dev).detach().requires_grad_(True)
                tb = t[i : i + chunk].to(dev)
                out[i : i + chunk] = fn(xb, tb).detach().to(x.device)
        return out
    finally:
        model.train(was_training)
