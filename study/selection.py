"""The selection rule (docs/spec.md §6) and the export of the chosen models.

Per dataset and penalty: among finished trials whose validation accuracy is within ``search.tolerance``
of the best ``none`` trial of the dataset, the best explanation score wins (ties: higher accuracy). If
none qualifies, the most accurate trial is taken and flagged ``within_tolerance = False``. A penalty
whose trials differ by seed only (replicates) keeps every seed, and ``search.select: every`` keeps every
finished trial (a λ grid: every point with its seeds). The chosen weights and config are
exported under ``models/``. Called by both schedules (:mod:`study.search`, :mod:`study.schedule`).
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd

from foundations import schemas as R
from foundations import model_paths, storage
from foundations.statistics import front_mask
from study.config import StudyConfig


def _jsonable(v):
    """A trials-table value as plain JSON (numpy scalars unwrapped, NaN/NaT -> null, times ISO)."""
    if isinstance(v, pd.Timestamp):
        return None if pd.isna(v) else v.isoformat()
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def _export(cfg: StudyConfig, row: pd.Series, extra: dict, sub: str | None = None) -> tuple[str, str]:
    """Copy the trial's final weights to models/<dataset>/<penalty>/[<sub>/] (state_dict .pt + config JSON)."""
    import torch

    from trainables.trainable import load_state

    folder = storage.join(cfg.location, "models", row["dataset"], row["penalty"], *([sub] if sub else []))
    state = load_state(row["checkpoint_path"])
    weights, conf = storage.join(folder, "model.pt"), storage.join(folder, "config.json")
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in state["run"]["model"].items()}, buf)
    storage.write_bytes(weights, buf.getvalue())  # whole or not at all
    payload = {
        "train_config": json.loads(row["train_config"]),
        "trial": {k: _jsonable(v) for k, v in row.items() if k != "train_config"},
        "selection": extra,
        "study": cfg.to_dict(),
    }
    storage.write_text(conf, json.dumps(payload, indent=2))
    return weights, conf


def select(cfg: StudyConfig, trials: pd.DataFrame, export: bool = True) -> pd.DataFrame:
    """The selection rule of docs/spec.md §6 over ``trials``; returns rows conforming to ``results.SELECTED``."""
    rows = []
    for dataset in cfg.datasets:
        d = trials[(trials["dataset"] == dataset) & trials["penalty"].isin(cfg.penalties)]
        done = d[(d["status"] != "error") & np.isfinite(d["val_acc"]) & np.isfinite(d["val_morf"])]
        base = done[done["penalty"] == "none"]["val_acc"]
        baseline = float(base.max()) if len(base) else float("nan")
        front = front_mask(done["val_acc"], done["val_morf"])
        on_front = set(done["trial_id"][front])
        for penalty in cfg.penalties:
            p = done[done["penalty"] == penalty]
            if p.empty:
                continue
            ok = p[p["val_acc"] >= baseline - cfg.search.tolerance - 1e-12] if np.isfinite(baseline) else p
            within = not ok.empty
            keep_all = cfg.keeps_every(penalty)
            if keep_all:  # replicates, or select: every: every finished trial is kept
                picks = [r for _, r in p.sort_values("trial_id").iterrows()]
            else:
                picks = [
                    (
                        ok.sort_values(["val_morf", "val_acc"], ascending=False)
                        if within
                        else p.sort_values(["val_acc", "val_morf"], ascending=False)
                    ).iloc[0]
                ]
            all_p = d[d["penalty"] == penalty]
            for pick in picks:
                if keep_all:
                    within = bool(
                        np.isfinite(baseline) and pick["val_acc"] >= baseline - cfg.search.tolerance - 1e-12
                    ) or not np.isfinite(baseline)
                info = {
                    "baseline_val_acc": baseline,
                    "tolerance": cfg.search.tolerance,
                    "within_tolerance": within,
                    "has_baseline": bool(np.isfinite(baseline)),
                }
                sub = pick["trial_id"] if keep_all else None
                weights, conf = _export(cfg, pick, info, sub) if export else ("", "")
                rows.append(
                    {
                        "study": cfg.name,
                        "dataset": dataset,
                        "penalty": penalty,
                        "trial_id": pick["trial_id"],
                        "model": pick["model"],
                        "lam": pick["lam"],
                        "lr": pick["lr"],
                        "seed": pick["seed"],
                        "val_acc": pick["val_acc"],
                        "val_morf": pick["val_morf"],
                        **info,
                        "on_pareto_front": bool(pick["on_pareto_front"]),
                        "on_dataset_pareto_front": pick["trial_id"] in on_front,
                        "n_trials": len(all_p),
                        "n_failed": int((all_p["status"] == "error").sum()),
                        "weights_path": model_paths.to_stored(cfg.location, weights),  # relative to the study
                        "config_path": model_paths.to_stored(cfg.location, conf),
                        "git_commit": pick["git_commit"],
                    }
                )
    return pd.DataFrame(rows, columns=R.SELECTED.names)


def format_selected(selected: pd.DataFrame) -> str:
    """A fixed-width table of the selected models."""
    if selected.empty:
        return "(no model selected)"
    cols = ["dataset", "penalty", "trial_id", "lam", "lr", "seed", "val_acc", "val_morf", "within_tolerance",
            "on_pareto_front"]
    return selected[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
