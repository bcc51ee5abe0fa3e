"""Every penalty's value on a fixed validation batch, recorded each epoch for every trained model.

Whatever penalty a model trains with, :func:`penalty_values` measures all six (SPEC §4) on the same
``n`` validation images (:func:`probe_batch`: a seeded subset of the validation split, seeded by the
split seed, so every trial of a study is measured on the same images), with the model in eval mode
(BatchNorm with its running statistics, no dropout: the values depend on the weights only), g the input
gradient of the true-class logit, each penalty's default hyper-parameters except the trained penalty's
own, and symmetry's angle drawn by a generator seeded the same way every epoch. The epochs table holds
them as :data:`COLUMNS` (``val_gradient``, ..., ``val_symmetry``).
"""

from __future__ import annotations

import torch
from torch import nn

from foundations import seeds
from trainables.config import MEASURED_PENALTIES as MEASURED
from trainables.config import PENALTY_VALUE_COLUMNS as COLUMNS  # noqa: F401  (its columns, named here too)
from trainables.config import resolve_penalty_params
PROBE_SIZE = 256  # validation images of the fixed batch


def probe_batch(val_x: torch.Tensor, val_y: torch.Tensor, split_seed: int, n: int = PROBE_SIZE):
    """(x float N×1×28×28 in [0, 1], y) of the fixed batch: ``seeds.subset(len(val_y), n, mix(split_seed, 5))``."""
    from foundations.data import to_float

    idx = seeds.subset(len(val_y), n, seeds.mix(split_seed, 5))
    return to_float(val_x[idx]), val_y[idx].long()


def penalty_values(model: nn.Module, x: torch.Tensor, y: torch.Tensor, own: str = "none",
                   own_params: dict | None = None, seed: int = 0) -> dict[str, float]:
    """{``val_<penalty>``: R_penalty} of ``model`` on (x, y); ``own_params`` apply to penalty ``own``."""
    from trainables.penalties import Batch, penalty
    from trainables.saliency import input_gradient

    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    was = model.training
    model.eval()
    try:
        logits, g = input_gradient(model, x, y, create_graph=False)
        out = {}
        for name in MEASURED:
            params = resolve_penalty_params(name, own_params if name == own else None)
            gen = torch.Generator().manual_seed(seeds.mix(seed, 6))  # the same symmetry angle every epoch
            r = penalty(name, Batch(model, x, y, logits.detach(), g.detach(), gen), **params)
            out[f"val_{name}"] = float(r.detach())
        return out
    finally:
        model.train(was)
