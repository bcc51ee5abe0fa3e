"""A selected model's accuracy on the whole test set (every image, one batched pass), as per-image rows.

The evaluation stage's chunk-0 task writes them under ``full_test_accuracy`` (``method = ""``, one row per
test image, value 1 if classified correctly); ``accuracy`` stays the per-image accuracy on the evaluated
(explanation) subset.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from foundations.data import to_float

METRIC = "full_test_accuracy"


@torch.no_grad()
def correct(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """(N,) bool: ``model``'s prediction on each uint8 image equals its label (eval mode, mode restored)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        preds = [model(to_float(x_u8[i : i + batch_size]).to(dev)).argmax(1).cpu()
                 for i in range(0, len(y), batch_size)]
    finally:
        model.train(was)
    return torch.cat(preds) == torch.as_tensor(y).cpu()


def rows(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, *, dataset: str, penalty: str, model_id: str,
         seed: int) -> pd.DataFrame:
    """One ``full_test_accuracy`` row per test image (``sample`` = its index) in the evaluation table's columns."""
    ok = correct(model, x_u8, y).double().numpy()
    return pd.DataFrame({"dataset": dataset, "penalty": penalty, "model_id": model_id, "method": "", "metric": METRIC,
                         "level": float("nan"), "sample": range(len(ok)), "value": ok, "seed": int(seed)})
