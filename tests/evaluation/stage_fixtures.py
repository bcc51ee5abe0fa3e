"""Two really trained tiny models exported like the search stage does, and stage settings."""

from __future__ import annotations

import json
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
    from study.data import default_root

    return default_root()


def small_settings(**kw) -> StageSettings:
    base = dict(
        study="test",
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
    return StageSettings(**base)
