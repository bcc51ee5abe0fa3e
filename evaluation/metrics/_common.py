"""Shared helpers of the metrics: input checks, chunked forward passes, curve areas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

# Images per forward pass. On a CPU, 2048 images of cnn3b (51 MB per activation) fall out of the
# caches: bench/bench_metrics.py measured the faithfulness correlation at 12.5 s per 1000 images
# with 2048, 7.2 s with 512 (the forward-pass floor is 6.4 s). Pass a larger batch_size on a GPU.
DEFAULT_BATCH_SIZE = 512

AttributeFn = Callable[[Tensor, Tensor], Tensor]
"""``attribute_fn(x, target) -> attributions`` shaped like ``x`` (e.g. a partial of
:func:`evaluation.attributions.attribute`)."""


@dataclass(frozen=True)
class MetricInput:
    """What :func:`evaluation.evaluate.evaluate_model` hands a metric's ``rows`` function, per method.

    ``rows(inp)`` returns ``[(output, values, levels), ...]``: ``values`` (B,) with ``levels`` None,
    or (B, L) at ``levels`` (L,); ``output`` is one of the group's registered outputs
    (:mod:`evaluation.metrics.registry`). Model-level outputs are kept for the first method only.
    """

    model: nn.Module
    x: Tensor  # the evaluated images (B, 1, 28, 28)
    labels: Tensor  # their true labels (B,)
    target: Tensor  # the explained class (B,)
    attributions: Tensor  # the method's maps, shaped like x
    attribute_fn: "AttributeFn"  # the method, for metrics that re-attribute perturbed images
    seed: int = 0
    batch_size: int = 512
    params: dict[str, Any] = field(default_factory=dict)  # the group's metric_params
    # The method by name, for metrics that recompute the maps with another model (mprt): attribute_fn is
    # ``attribute(model, x, target, method=method, **attribute_kwargs)``. "" when the caller did not say.
    method: str = ""
    attribute_kwargs: dict[str, Any] = field(default_factory=dict)  # batch_size, seed, the method's params...


Rows = list[tuple[str, Tensor, "Tensor | None"]]


def device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def check_batch(x: Tensor, y: Tensor, attributions: Tensor | None = None) -> None:
    """Raise ValueError on an empty batch, mismatched shapes, bad targets or NaN attributions."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    y = torch.as_tensor(y)
    if y.shape != (x.shape[0],) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must be integer class indices of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    if attributions is not None:
        if not isinstance(attributions, Tensor) or attributions.shape != x.shape:
            shape = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
            raise ValueError(f"attributions must have the shape of x {tuple(x.shape)}, got {shape}")
        if not torch.isfinite(attributions).all():
            bad = (~torch.isfinite(attributions.flatten(1))).any(1).nonzero().flatten().tolist()
            more = "..." if len(bad) > 10 else ""
            raise ValueError(f"attributions contain NaN or infinite values (samples {bad[:10]}{more})")


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def check_increasing(name: str, values: Sequence[float], *, minimum: float | None = None) -> Tensor:
    """``values`` as a float64 tensor; ValueError unless non-empty, finite and strictly increasing."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if v.dim() != 1 or v.numel() == 0 or not torch.isfinite(v).all():
        raise ValueError(f"{name} must be a non-empty list of finite numbers, got {list(values)!r}")
    if (v[1:] <= v[:-1]).any():
        raise ValueError(f"{name} must be strictly increasing, got {list(values)!r}")
    if minimum is not None and (v < minimum).any():
        raise ValueError(f"{name} must be >= {minimum}, got {list(values)!r}")
    return v


def check_positive_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@torch.no_grad()
def forward_chunked(model: nn.Module, n: int, make: Callable[[int, int], Tensor], batch_size: int) -> Tensor:
    """Concatenate ``model(make(i, j))`` over chunks [i, j) of ``range(n)`` (no grad)."""
    outs = [model(make(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


class eval_mode:
    """Context manager: model in eval mode, previous mode restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.was = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        self.model.train(self.was)


def trapezoid(y: Tensor, x: Tensor) -> Tensor:
    """Area under ``y`` (..., L) versus ``x`` (L,) by the trapezoid rule (0 for L = 1)."""
    if y.shape[-1] < 2:
        return torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device)
    return torch.trapezoid(y, x.to(y), dim=-1)


def area_with_clean_point(y: Tensor, x: Tensor, clean: Tensor) -> Tensor:
    """Trapezoid area of the curve ``(0, clean), (x_1, y_1), …`` (docs/spec.md §5: every accuracy curve starts
    at x = 0 with the clean accuracy). ``y`` (B, L), ``x`` (L,), ``clean`` (B,); when x_1 = 0 the
    curve already holds its clean point and this is :func:`trapezoid`."""
    x = x.to(y)
    if x.numel() and float(x[0]) == 0.0:
        return trapezoid(y, x)
    xs = torch.cat([x.new_zeros(1), x])
    ys = torch.cat([clean.to(y).reshape(-1, 1).expand(y.shape[0], 1), y], dim=-1)
    return trapezoid(ys, xs)


def with_clean_point(acc: Tensor, levels: Tensor, clean: Tensor) -> tuple[Tensor, Tensor]:
    """An accuracy curve (B, L) at ``levels`` with its clean point (level 0) first, unless it has one."""
    if levels.numel() and float(levels[0]) == 0.0:
        return acc, levels
    return torch.cat([clean.to(acc).reshape(-1, 1), acc], 1), torch.cat([levels.new_zeros(1), levels])


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation along the last dim (float64); 0 where either side is constant."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    num = (a * b).sum(-1)
    den = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.zeros_like(num))


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded from ``seed`` (draws are made on the CPU, then moved)."""
    return torch.Generator().manual_seed(int(seed))


def masked_sums(masks: Tensor, values: Tensor, block: int = 64) -> Tensor:
    """Σ_i values[b, i] over masks[b, m, i] → (B, M) float64, in blocks of images (bounded memory)."""
    v = values.flatten(1).double()
    outs = [
        torch.bmm(masks[i : i + block].double(), v[i : i + block, :, None])[..., 0]
        for i in range(0, masks.shape[0], block)
    ]
    return torch.cat(outs)
