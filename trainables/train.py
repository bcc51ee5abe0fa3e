"""The training loop: one model, one configuration, per-epoch records.

A plain function (no Ray): :func:`train` yields one record per epoch; :class:`TrainRun` is the
same loop with its state exposed for checkpoint/resume (the Tune trainable uses it). Every
random choice (data subset, shuffling, dropout, symmetry angles) is seeded from
``TrainConfig.seed`` and the epoch number, so a run resumed at an epoch boundary is identical to
an uninterrupted one, and two runs with the same seed give identical records on CPU::

    python -m trainables.train --dataset mnist --penalty smoothness --lam 0.1 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from foundations import data as data_mod
from foundations import seeds
from trainables.config import (  # noqa: F401  (TrainConfig and the names are re-exported)
    BATCH_NORMS, DEVICES, OPTIMIZERS, TrainConfig,
)
from trainables.models import (
    MODELS, batch_statistics_constant, build_model, frozen_running_stats, has_batch_norm,
)
from trainables.penalties import PENALTIES, Batch, penalty
from trainables.saliency import input_gradient

class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message names the epoch and batch."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no GPU is available")
    return torch.device(name)


def _seed(*parts: int) -> int:
    return seeds.mix(0, *parts, bits=62)


@torch.no_grad()
def accuracy(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy of ``model`` (put in eval mode and restored) on uint8 images."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for i in range(0, len(y), batch_size):
        xb = data_mod.to_float(x_u8[i : i + batch_size].to(dev))
        correct += (model(xb).argmax(1) == y[i : i + batch_size].to(dev)).sum().item()
    model.train(was)
    return correct / max(len(y), 1)


def training_step_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator):
    """(total, ce, R) for one batch; saliency is computed only when the penalty needs it.

    With BatchNorm and ``cfg.batch_norm == "standard"`` the cross-entropy comes from a forward through
    torch's BatchNorm and g from a second forward with the statistics held constant (running statistics
    moved once per step, by the first)."""
    standard = cfg.batch_norm == "standard" and has_batch_norm(model)
    if cfg.penalty == "none" or cfg.lam == 0:
        with batch_statistics_constant(model, not standard):
            logits = model(x)
        ce = F.cross_entropy(logits, y)
        return ce, ce, ce.new_zeros(())
    if standard:
        with batch_statistics_constant(model, False):
            logits = model(x)
        with frozen_running_stats(model):
            _, g = input_gradient(model, x, y, create_graph=True)
    else:
        logits, g = input_gradient(model, x, y, create_graph=True)
    ce = F.cross_entropy(logits, y)
    r = penalty(cfg.penalty, Batch(model, x, y, logits, g, gen), **cfg.penalty_params)
    return ce + cfg.lam * r, ce, r


class TrainRun:
    """A training run whose state (model, optimiser, finished epochs) can be saved and restored.

    Args:
        cfg: the run's configuration.
        splits: loaded data (default: ``foundations.data.load(cfg.dataset, ...)``, once per process).
        extra_metrics: optional ``fn(model, splits) -> dict`` evaluated after each epoch (the search
            stage adds its validation explanation score here).
    """

    def __init__(self, cfg: TrainConfig, splits: data_mod.Splits | None = None, extra_metrics: Callable | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.splits = splits or data_mod.load(cfg.dataset, cfg.data_root or None, cfg.val_fraction, cfg.split_seed)
        self.extra_metrics = extra_metrics
        torch.manual_seed(_seed(cfg.seed, 0))
        self.model = build_model(cfg.model).to(self.device)
        params = self.model.parameters()
        self.optimizer = (
            torch.optim.Adam(params, lr=cfg.lr)
            if cfg.optimizer == "adam"
            else torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
        )
        n = len(self.splits.train_y)
        keep = max(1, int(round(n * cfg.data_fraction)))
        idx = seeds.subset(n, keep, _seed(cfg.seed, 1))
        self.train_x = self.splits.train_x[idx].to(self.device)
        self.train_y = self.splits.train_y[idx].to(self.device)
        self.epoch = 0  # epochs finished

    def val_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation images (uint8) and labels this run evaluates on."""
        n = self.cfg.val_limit or len(self.splits.val_y)
        return self.splits.val_x[:n], self.splits.val_y[:n]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])

    def run_epoch(self) -> dict:
        cfg, model = self.cfg, self.model
        e = self.epoch + 1
        torch.manual_seed(_seed(cfg.seed, 2, e))  # dropout masks
        gen = torch.Generator().manual_seed(_seed(cfg.seed, 3, e))  # penalty randomness
        order = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(_seed(cfg.seed, 4, e)))
        order = order.to(self.device)
        model.train()
        t0 = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        n_batches = 0
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            sel = order[start : start + cfg.batch_size]
            x = data_mod.to_float(self.train_x[sel])
            y = self.train_y[sel]
            loss, ce, r = training_step_loss(model, x, y, cfg, gen)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss {loss.item()} at epoch {e}, batch {b + 1} "
                    f"(penalty={cfg.penalty}, lam={cfg.lam}, lr={cfg.lr}); lower lam or lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums += torch.stack([loss.detach(), ce.detach(), r.detach()]).double()
            n_batches += 1
        train_seconds = time.perf_counter() - t0
        self.epoch = e
        means = (sums / max(n_batches, 1)).tolist()
        record = {
            "epoch": e,
            "train_loss": means[0],
            "ce": means[1],
            "penalty_value": means[2],
            "val_acc": accuracy(model, *self.val_set(), cfg.eval_batch_size),
            **self.penalty_values(),
            "train_seconds": train_seconds,
            "samples_per_s": len(order) / train_seconds if train_seconds > 0 else float("nan"),
        }
        if self.extra_metrics is not None:
            record.update(self.extra_metrics(model, self.splits))
        record["seconds"] = time.perf_counter() - t0
        return record

    def penalty_values(self) -> dict:
        """Each of the six penalties on the run's fixed validation batch (:mod:`trainables.penalty_values`)."""
        from trainables import penalty_values as pv

        if not hasattr(self, "_probe"):
            self._probe = pv.probe_batch(self.splits.val_x, self.splits.val_y, self.cfg.split_seed)
        return pv.penalty_values(self.model, *self._probe, own=self.cfg.penalty, own_params=self.cfg.penalty_params,
                                 seed=self.cfg.split_seed)

    def __iter__(self) -> Iterator[dict]:
        while self.epoch < self.cfg.epochs:
            yield self.run_epoch()


def train(cfg: TrainConfig, splits: data_mod.Splits | None = None) -> Iterator[dict]:
    """Train one model for ``cfg``; yields a record per epoch (see :meth:`TrainRun.run_epoch`)."""
    yield from TrainRun(cfg, splits)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m trainables.train", description="Train one model and print per-epoch records."
    )
    p.add_argument("--dataset", default="mnist", choices=data_mod.DATASETS, help="dataset (default: mnist)")
    p.add_argument("--model", default="", help=f"one of {', '.join(MODELS)} (default: the dataset's)")
    p.add_argument("--penalty", default="none", help=f"one of {', '.join(PENALTIES)}")
    p.add_argument("--lam", type=float, default=0.1, help="penalty weight λ (default: 0.1)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="""penalty hyper-parameter as JSON (repeatable), e.g. m=0.2 or 'angles=["rot90", 10]'""",
    )
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="optimiser (default: adam)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 0.001)")
    p.add_argument("--batch-size", type=int, default=30, help="training batch size (default: 30)")
    p.add_argument("--epochs", type=int, default=8, help="epochs to train (default: 8)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the data subset, shuffling, initialisation, dropout and penalty randomness (default: 0)",
    )
    p.add_argument(
        "--data-fraction", type=float, default=1.0, help="fraction of the training split used, in (0, 1] (default: 1)"
    )
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: the GPU if there is one (default: auto)")
    p.add_argument("--data-root", default="", help="folder of prepared data (default: $SALIENCY_DATA_ROOT or ./data)")
    a = p.parse_args(argv)
    try:
        params = {}
        for item in a.param:
            k, sep, v = item.partition("=")
            if not sep or not k:
                raise ValueError(f"--param {item}: expected KEY=JSON, e.g. m=0.2")
            try:
                params[k] = json.loads(v)
            except json.JSONDecodeError:
                raise ValueError(
                    f"--param {k}: {v!r} is not JSON; give KEY=JSON, e.g. m=0.2, class_rule='\"prediction\"' "
                    f"""or angles='["rot90"]' (strings in double quotes, lists in brackets)"""
                ) from None
        if a.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device: 'cuda' requested but no GPU is available; valid choices: auto, cpu")
        try:
            data_mod.verify(a.data_root or data_mod.default_root(), a.dataset)
        except data_mod.DataError as exc:
            raise ValueError(f"--data-root: {exc}") from None
        cfg = TrainConfig(
            dataset=a.dataset,
            model=a.model,
            penalty=a.penalty,
            lam=a.lam,
            penalty_params=params,
            optimizer=a.optimizer,
            lr=a.lr,
            batch_size=a.batch_size,
            epochs=a.epochs,
            seed=a.seed,
            data_fraction=a.data_fraction,
            device=a.device,
            data_root=a.data_root,
        )
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"config": cfg.to_dict()}), flush=True)
    for rec in train(cfg):
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
