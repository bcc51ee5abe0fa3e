"""ROAR: remove and retrain (Hooker et al. 2019), docs/spec.md §5.

For one evaluated model and attribution method:

1. :func:`pixel_ranks` ranks every pixel of every training and test image by the model's
   attribution (computed once, on the model's own [0, 1] input scale, batched); ties are broken
   by a seeded random permutation so that flat regions are not removed in raster order;
2. for each fraction t, :func:`remove_top` replaces each image's top ``round(t·784)`` pixels by
   the replacement value (the dataset's mean training pixel by default, 0 selectable);
3. :func:`retrain` trains a fresh, unregularised model of the same architecture with the study's
   training settings on the modified training set and measures accuracy on the modified test set.

The random-ranking control runs through the same code with ``method="random"``. Score: the
area under accuracy versus t (trapezoid over the fractions; lower = the attribution found the
information the model needs).

Images stay uint8 throughout; the replacement value is rounded to the nearest of the 256 pixel
levels (for MNIST's mean 0.1307: 33/255 = 0.1294), a difference far below one grey level.

References:
    Hooker, Erhan, Kindermans, Kim. A Benchmark for Interpretability Methods in Deep Neural
    Networks. NeurIPS 2019.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from evaluation.metrics.registry import REGISTRY
from foundations import seeds
from foundations.data import Splits, to_float
from trainables.train import TrainConfig, TrainRun, accuracy

SPEC = REGISTRY["roar"]  # outputs roar / roar_clean, directions, references: evaluation/metrics/registry.py
NAME = SPEC.name
HIGHER_IS_BETTER = SPEC.higher_is_better  # area under retrained accuracy vs fraction removed: lower is better
REFERENCE = SPEC.reference
FRACTIONS = tuple(SPEC.params["fractions"])
REPLACEMENTS = ("mean", "zero")
D = 28 * 28


@dataclass(frozen=True)
class Ranked:
    """Per-pixel ranks (0 = most relevant) of the images a ROAR retrain uses, as int16 N×784."""

    method: str
    train_idx: torch.Tensor  # indices into Splits.train_x of the training images used
    train_ranks: torch.Tensor
    test_ranks: torch.Tensor  # for the first ``len(test_ranks)`` test images
    seconds: float


def ranks_from_attributions(a: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """int16 N×784 rank of each pixel by descending attribution; ties in a seeded random order."""
    flat = a.reshape(len(a), -1).float()
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed)).to(flat.device)
    order = perm[torch.argsort(flat[:, perm], dim=1, descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.to(torch.int16).cpu()


def remove_top(x_u8: torch.Tensor, ranks: torch.Tensor, fraction: float, value: float) -> torch.Tensor:
    """Copy of uint8 images N×28×28 with each image's top ``round(fraction·784)`` pixels set to ``value``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    k = int(round(fraction * D))
    fill = int(round(value * 255))
    out = x_u8.reshape(len(x_u8), -1).clone()
    out[ranks.to(torch.int64) < k] = fill
    return out.view_as(x_u8)


def replacement_value(splits: Splits, replacement: str) -> float:
    if replacement not in REPLACEMENTS:
        raise ValueError(f"unknown ROAR replacement {replacement!r}; valid choices: {', '.join(REPLACEMENTS)}")
    return splits.mean_pixel if replacement == "mean" else 0.0


def subset_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    return seeds.subset(n, max(1, int(round(n * fraction))), seed)


def pixel_ranks(
    model: nn.Module | None,
    splits: Splits,
    method: str,
    *,
    data_fraction: float = 1.0,
    n_test: int = 0,
    seed: int = 0,
    batch_size: int = 512,
    method_params: dict | None = None,
) -> Ranked:
    """Rank the pixels of the training subset and of the first ``n_test`` test images (0 = all).

    Attributions are taken for the model's predicted class (docs/spec.md §5's default target) on the
    [0, 1] images, in batches; ``method="random"`` needs no model.
    """
    from evaluation.attributions import attribute
    from evaluation.captum_methods import extra_inputs

    t0 = time.perf_counter()
    extra = extra_inputs(method, splits.train_x, method_params, seed)  # deeplift_shap's baselines
    idx = subset_indices(len(splits.train_y), data_fraction, seed)
    n_test = n_test or len(splits.test_y)
    parts = []
    for x_u8, y in ((splits.train_x[idx], splits.train_y[idx]), (splits.test_x[:n_test], splits.test_y[:n_test])):
        if method == "random":
            a = torch.rand(len(y), D, generator=torch.Generator().manual_seed(seed + len(parts) + 1))
        else:
            dev = next(model.parameters()).device
            chunks = []
            model.eval()
            for i in range(0, len(y), batch_size):
                xb = to_float(x_u8[i : i + batch_size]).to(dev)
                with torch.no_grad():
                    pred = model(xb).argmax(1)
                a = attribute(model, xb, pred, method, batch_size=batch_size, seed=seed, **(method_params or {}),
                              **{k: v.to(dev) for k, v in extra.items()})
                chunks.append(a.detach().reshape(len(xb), -1).cpu())
            a = torch.cat(chunks)
        parts.append(ranks_from_attributions(a, seed))
    return Ranked(method, idx, parts[0], parts[1], time.perf_counter() - t0)


def retrain(
    splits: Splits,
    ranked: Ranked,
    fraction: float,
    train_cfg: TrainConfig,
    *,
    repeat: int = 0,
    replacement: str = "mean",
) -> dict:
    """Retrain a fresh unregularised model on the modified images; accuracy on modified test images.

    ``train_cfg`` supplies the architecture and training settings; its penalty is replaced by
    ``none`` and its seed by ``train_cfg.seed + repeat``. Returns accuracy, seconds and sizes.
    """
    t0 = time.perf_counter()
    value = replacement_value(splits, replacement)
    n_test = len(ranked.test_ranks)
    train_x = remove_top(splits.train_x[ranked.train_idx], ranked.train_ranks, fraction, value)
    test_x = remove_top(splits.test_x[:n_test], ranked.test_ranks, fraction, value)
    modified = replace(
        splits,
        train_x=train_x,
        train_y=splits.train_y[ranked.train_idx],
        val_x=test_x[:1],  # per-epoch validation is not used in ROAR; accuracy is measured below
        val_y=splits.test_y[:1],
        test_x=test_x,
        test_y=splits.test_y[:n_test],
    )
    cfg = replace(train_cfg, penalty="none", penalty_params={}, lam=0.0, data_fraction=1.0,
                  seed=train_cfg.seed + repeat, val_limit=0)
    run = TrainRun(cfg, modified)
    for _ in run:
        pass
    acc = accuracy(run.model, modified.test_x, modified.test_y, cfg.eval_batch_size)
    return {
        "method": ranked.method,
        "fraction": float(fraction),
        "repeat": int(repeat),
        "accuracy": acc,
        "seconds": time.perf_counter() - t0,
        "n_train": len(train_x),
        "n_test": n_test,
    }


def area(fractions, accuracies) -> float:
    """Trapezoid area under accuracy versus fraction removed (over the fractions given)."""
    f = torch.as_tensor(list(fractions), dtype=torch.float64)
    a = torch.as_tensor(list(accuracies), dtype=torch.float64)
    order = torch.argsort(f)
    return float(torch.trapezoid(a[order], f[order]))
