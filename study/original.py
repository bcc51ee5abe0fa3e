"""The original study beside this one, like for like (docs/results.md, "The original study beside this one").

``docs/reference/seed-notebook-mnist.csv`` holds the numbers the original study published (one model per
penalty; how each was computed: docs/reference/README.md). :data:`CONVENTIONS` says, for each of its
metrics, which of this project's per-model values is the same quantity in the original's convention
(its grids, its unnormalised areas, its complexity formula) and what still differs. :func:`beside` puts
each original number next to this study's mean and 95 % t-interval over seeds, says whether it lies
inside, and names the seed nearest to it; :func:`orderings` compares the ordering of the penalties
(Kendall's τ). Everything comes from the study's tables: nothing is copied by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from foundations.statistics import t_interval
from study import replicates

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "seed-notebook-mnist.csv"


@dataclass(frozen=True)
class Convention:
    """How one of the original's metrics is read from this project's per-model values."""

    metric: str  # this project's metric (replicates.per_model), in the original's convention
    method: str  # "saliency", or "" for a property of the model
    map_penalty: str | None  # None: each model's own maps; else the maps of that penalty's model
    differs: str  # what still differs from the original's computation


CONVENTIONS: dict[str, Convention] = {
    "test_accuracy": Convention("full_test_accuracy", "", None, "same: all 10 000 test images"),
    "morf_auc": Convention(
        "morf", "saliency", None,
        "same formula (20 percentile levels of the non-zero attributions, ratio of the predicted class's "
        "softmax, unnormalised area); ours over the 500 evaluated test images"),
    "morf_auc_with_symmetry_maps": Convention(
        "morf", "saliency", "symmetry",
        "as morf_auc, pixels ranked by the symmetry model of the same seed; the original's maps are towards "
        "the label, ours towards the class the scored model predicts"),
    "morf_auc_with_baseline_maps": Convention(
        "morf", "saliency", "none",
        "as morf_auc, pixels ranked by the baseline model of the same seed; the original's maps are towards "
        "the label, ours towards the class the scored model predicts"),
    "faithfulness": Convention(
        "faithfulness_nested", "saliency", None,
        "same nested levels and Pearson correlation per image; the original's target is the label, ours the "
        "predicted class"),
    "complexity": Convention(
        "complexity_seed", "saliency", None,
        "the original's formula (+0.01 inside the log); the original used its last test batch, ours the 500 "
        "evaluated images"),
    "roar_auc": Convention(
        "roar_clean", "saliency", None,
        "both unnormalised over t in [0, 0.9]; grids differ (original 0, 0.2, 0.5, 0.8, 0.9 with one retrain "
        "each; ours 0, 0.1, 0.3, 0.5, 0.7, 0.9 with 3 repeats), and so do the retrains (original: the full "
        "training; ours: the preset's ROAR budget)"),
    "gaussian_auc": Convention(
        "gaussian_auc_clean", "", None,
        "same σ grid, unnormalised; the original's noise had mean +1.0 (a defect of its loader), ours mean 0"),
    "block_auc": Convention("block_auc_clean", "", None, "same block sizes, unnormalised (maximum 12)"),
}


def load_reference(path: str | Path = REFERENCE) -> pd.DataFrame:
    """The original's numbers: dataset, penalty, metric, value, source."""
    ref = pd.read_csv(path)
    unknown = sorted(set(ref["metric"]) - set(CONVENTIONS))
    if unknown:
        raise ValueError(f"{path}: metric(s) {unknown} have no convention; known: {', '.join(CONVENTIONS)}")
    return ref


def per_seed(s) -> pd.DataFrame:
    """One value per selected model for each of the original's metrics, in its convention:
    dataset, penalty, model_id, seed, original_metric, value."""
    s = replicates.as_study(s)
    pm = replicates.per_model(s)
    frames = []
    for name, c in CONVENTIONS.items():
        if c.map_penalty is None:
            v = pm[(pm["metric"] == c.metric) & (pm["method"] == c.method)]
        else:
            v = replicates.cross_map_per_model(s, c.metric, c.method)
            v = v[v["maps"] == c.map_penalty]
        frames.append(v.assign(original_metric=name))
    cols = ["dataset", "penalty", "model_id", "seed", "original_metric", "value"]
    frames = [f[cols] for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def beside(s, reference: pd.DataFrame | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """One row per reference number: dataset, penalty, metric, original, mean, ci_low, ci_high, n, inside,
    nearest_seed, nearest_value, our_metric, differs. ``mean`` etc. are NaN where this study lacks the value."""
    ref = load_reference() if reference is None else reference
    seeds = per_seed(s)
    rows = []
    for _, r in ref.iterrows():
        c = CONVENTIONS[r["metric"]]
        g = seeds[(seeds["dataset"] == r["dataset"]) & (seeds["penalty"] == r["penalty"])
                  & (seeds["original_metric"] == r["metric"])].sort_values("seed")
        v = g["value"].to_numpy(float)
        lo, hi = t_interval(v, confidence) if len(v) else (np.nan, np.nan)
        near = g.iloc[int(np.argmin(np.abs(v - r["value"])))] if len(v) else None
        rows.append({
            "dataset": r["dataset"], "penalty": r["penalty"], "metric": r["metric"], "original": float(r["value"]),
            "mean": float(v.mean()) if len(v) else np.nan, "ci_low": lo, "ci_high": hi, "n": len(v),
            "inside": bool(lo <= r["value"] <= hi) if len(v) > 1 else None,
            "nearest_seed": int(near["seed"]) if near is not None else None,
            "nearest_value": float(near["value"]) if near is not None else np.nan,
            "min": float(v.min()) if len(v) else np.nan, "max": float(v.max()) if len(v) else np.nan,
            "our_metric": c.metric, "differs": c.differs,
        })
    return pd.DataFrame(rows)


def orderings(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and metric of :func:`beside`: Kendall's τ between the original's values and this study's
    means over the penalties both have (τ = 1: the same ordering), its p-value, and the number of penalties."""
    from scipy.stats import kendalltau

    rows = []
    for (ds, metric), g in table.groupby(["dataset", "metric"], sort=False):
        g = g[np.isfinite(g["mean"])]
        tau, p = kendalltau(g["original"], g["mean"]) if len(g) >= 2 else (np.nan, np.nan)
        rows.append({"dataset": ds, "metric": metric, "tau": float(tau), "p_value": float(p), "n_penalties": len(g)})
    return pd.DataFrame(rows, columns=["dataset", "metric", "tau", "p_value", "n_penalties"])
