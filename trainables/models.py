"""The seed's shallow CNNs (docs/spec.md §2), selected by name: ``build_model("cnn3b")``.

``cnn4b`` uses :class:`BatchNorm2d`, a drop-in ``nn.BatchNorm2d`` that in training mode can
treat the batch statistics as constants (``stop_grad_stats``). With the statistics held
constant, each sample's logits depend on that sample's input only, so the gradient of
Σ_i f_{y_i}(x_i) is exactly the per-sample input gradient (docs/spec.md §3). Training
(``TrainConfig.batch_norm = "standard"``, the default) uses that mode only for the saliency the
penalty needs and trains the cross-entropy through torch's BatchNorm, for every penalty and the
``none`` baseline alike: holding the statistics constant for the loss too cost 2.1 points of test
accuracy on Fashion-MNIST (6 seeds, bench/bench_batchnorm.py); ``batch_norm = "constant"`` keeps it.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import DEFAULT_MODEL, MODELS  # noqa: F401  (re-exported)


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose batch statistics can be excluded from autograd (per-sample exactness).

    With ``stop_grad_stats=True`` (the default here) and in training mode, the layer normalises
    with the current batch's mean and (biased) variance, updates the running statistics exactly
    like ``nn.BatchNorm2d``, but does not backpropagate through the statistics. In eval mode it
    is identical to ``nn.BatchNorm2d``.
    """

    stop_grad_stats: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.stop_grad_stats):
            return super().forward(x)
        with torch.no_grad():
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            if self.track_running_stats and self.momentum:
                n = x.numel() / x.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
                self.num_batches_tracked += 1
        return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, eps=self.eps)


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, BatchNorm2d) for m in model.modules())


@contextmanager
def batch_statistics_constant(model: nn.Module, constant: bool = True):
    """Within the block, every :class:`BatchNorm2d` of ``model`` holds its batch statistics constant in
    backpropagation (``True``: exact per-sample gradients) or backpropagates through them as torch's
    BatchNorm does (``False``); restored afterwards."""
    bns = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    saved = [m.stop_grad_stats for m in bns]
    for m in bns:
        m.stop_grad_stats = constant
    try:
        yield model
    finally:
        for m, v in zip(bns, saved):
            m.stop_grad_stats = v


@contextmanager
def frozen_running_stats(model: nn.Module):
    """Extra forwards of a training step (fidelity, symmetry) must not move BN running stats."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield model
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


class CNN3B(nn.Sequential):
    """conv 1→8 5×5 pad 2, ReLU, maxpool 2; conv 8→16 5×5 pad 2, ReLU, maxpool 2; linear 784→10."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
        )


class CNN4B(nn.Sequential):
    """conv 1→32 3×3 pad 2, BN, ReLU; conv 32→64 3×3 pad 2, BN, ReLU, maxpool 2;
    dropout 0.15; linear 16384→32; dropout 0.25; linear 32→10."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 3, padding=2), BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=2), BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.15), nn.Flatten(), nn.Linear(64 * 16 * 16, 32),
            nn.Dropout(0.25), nn.Linear(32, 10),
        )


def build_model(name: str) -> nn.Module:
    """Return a freshly initialised model by name (``cnn3b`` or ``cnn4b``)."""
    if name == "cnn3b":
        return CNN3B()
    if name == "cnn4b":
        return CNN4B()
    raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(MODELS)}")
