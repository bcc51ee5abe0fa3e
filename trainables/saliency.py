"""Input-gradient saliency during training (docs/spec.md §3).

``g(x) = ∂ f_y(x) / ∂x``: each sample's true-class logit differentiated with respect to its own
input, for the whole batch in one backward pass, kept in the graph (``create_graph=True``) so a
penalty on ``g`` trains the weights.

Why one pass is exact: if sample i's logits depend only on x_i, then ∂/∂x_i Σ_j f_{y_j}(x_j) =
∂f_{y_i}(x_i)/∂x_i. Convolutions, pooling, ReLU, dropout (elementwise masks) and linear layers
satisfy this; train-mode BatchNorm does not, unless its batch statistics are held constant,
which :class:`trainables.models.BatchNorm2d` does (see that module).
"""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-8


def input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits, g)`` with ``g`` the per-sample gradient of the true-class logit.

    Args:
        model: maps B×1×28×28 to B×10 logits, per-sample (see module docstring).
        x: input batch; it is not modified (a leaf copy requiring grad is used).
        y: int64 labels (B,) selecting the logit to differentiate.
        create_graph: keep ``g`` differentiable with respect to the parameters (training).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        picked = logits.gather(1, y.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(picked, x, create_graph=create_graph)
    return logits, g


def minmax(g: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """ĝ: ``g`` min–max normalised per sample to [0, 1] (``eps`` guards constant maps)."""
    flat = g.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(g)
