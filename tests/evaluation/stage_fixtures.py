"""Two really trained tiny models exported like the search stage does, and stage settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from evaluation.stage import StageSettings
from trainables.train import TrainConfig, TrainRun


def make_selected(root: Path, mnist, penalties=("none", "gradient")) -> pd.DataFrame:
    """Train one cnn3b per penalty (1 epoch, 2% of MNIST) and write weights + config like search._export."""
    rows = []
    for i, pen in enumerate(penalties):
        cfg = TrainConfig(dataset="mnist", penalty=pen, lam=0.1, epochs=1, batch_size=64, data_fraction=0.02,
                          val_limit=500, seed=i, data_root=str(mnist_root()))
        run = TrainRun(cfg, mnist)
        rec = run.run_epoch()
        folder = root / "models" / "mnist" / pen
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(run.model.state_dict(), folder / "model.pt")
        (folder / "config.json").write_text(json.dumps({"train_config": cfg.to_dict()}))
        rows.append({"study": "test", "dataset": "mnist", "penalty": pen, "trial_id": f"t{i}", "model": "cnn3b",
                     "lam": cfg.lam, "lr": cfg.lr, "seed": cfg.seed, "val_acc": rec["val_acc"],
                     "weights_path": str(folder / "model.pt"), "config_path": str(folder / "config.json")})
    return pd.DataFrame(rows)


def mnist_root() -> Path:
    from foundations.data import default_root

    return default_root()


RUN_KEYS = ("study", "data_root", "cpu", "gpu", "max_in_flight", "max_retries")


def settings_with(s: StageSettings, **flat) -> StageSettings:
    """``s`` with some values replaced, named flat as before the settings were nested: ``roar_epochs``
    is ``evaluation.roar.epochs``, ``n_samples`` is ``evaluation.n_samples``, ``cpu`` is ``cpu`` …;
    ``roar_methods`` (a non-empty list, or [] for no ROAR) also puts ``roar`` in (or out of) the metrics."""
    ev = s.evaluation
    roar = {k[5:]: v for k, v in flat.items() if k.startswith("roar_")}
    top = {k: v for k, v in flat.items() if k in RUN_KEYS}
    evk = {k: v for k, v in flat.items() if k not in top and not k.startswith("roar_")}
    metrics = [m for m in evk.pop("metrics", ev.evaluate_metrics) if m != "roar"]
    with_roar = bool(roar["methods"]) if "methods" in roar else "roar" in ev.metrics
    new_ev = replace(ev, **evk, metrics=metrics + (["roar"] if with_roar else []), roar=replace(ev.roar, **roar))
    return replace(s, **top, evaluation=new_ev)


def small_settings(**kw) -> StageSettings:
    base = dict(
        methods=["saliency"],
        metrics=["morf", "faithfulness", "complexity", "gaussian", "square_block"],
        n_samples=24,
        chunk_size=12,
        roar_methods=["saliency"],
        roar_fractions=[0.5, 0.9],
        roar_repeats=1,
        roar_epochs=1,
        roar_data_fraction=0.02,
        roar_n_test=300,
        cpu=1.0,
        max_in_flight=2,
    )
    base.update(kw)
    return settings_with(StageSettings(study="test"), **base)
