"""The per-seed analysis of a replicated study (every seed of a fixed-λ search evaluated): one value per
model, then the mean over seeds with its t-interval, and paired comparisons over seeds.

::

    from study import analysis, replicates
    s = analysis.load("outputs/replicate")
    replicates.replicates(s)            # mean [95 % t-interval] over seeds, per penalty × method × metric
    replicates.compare_replicates(s)    # each penalty against the baseline, paired by seed, Holm-adjusted
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from foundations.statistics import adjust, t_interval
from study.analysis import RANDOM_METHOD, Study, as_study, sort_rows, higher_is_better, per_sample, roar_scores

REPLICATE_COLUMNS = ["dataset", "penalty", "method", "metric", "higher_is_better", "n", "mean", "ci_low", "ci_high",
                     "sd", "over", "values", "random_mean"]


def _model_seeds(s: Study) -> pd.DataFrame:
    """model_id -> (dataset, penalty, seed) of the selected models (the evaluation names them penalty-trial)."""
    sel = s.selected
    if sel.empty:
        return pd.DataFrame(columns=["model_id", "seed"])
    return pd.DataFrame(
        {
            "model_id": sel["penalty"].astype(str) + "-" + sel["trial_id"].astype(str),
            "seed": sel["seed"].astype("int64"),
        }
    ).drop_duplicates("model_id")


LEVEL_AVERAGED = ("max_sensitivity", "avg_sensitivity", "block_infidelity", "block_infidelity_raw")


def per_model(s) -> pd.DataFrame:
    """One value per (dataset, penalty, model_id, seed, method, metric): the mean over the model's test
    images (ROAR: over its repeats). Scalar metrics, plus the explanation metrics measured per level
    (:data:`LEVEL_AVERAGED`) averaged over their levels; test accuracy is metric ``accuracy``."""
    s = as_study(s)
    data = per_sample(s, levels=True)
    data = data[data["sample"] >= 0]
    # an explanation metric measured per level (sensitivity per σ, infidelity per s_max) becomes one scalar:
    # its mean over the levels (each level weighs the same, as in the curve's own mean)
    levelled = data["level"].notna() & data["metric"].isin(LEVEL_AVERAGED)
    data = data[data["level"].isna() | levelled]
    out = (
        data.groupby(["dataset", "penalty", "model_id", "method", "metric"], sort=True)["value"]
        .agg(value="mean", n_units="size")
        .reset_index()
    )
    return out.merge(_model_seeds(s), on="model_id", how="left")


def replicates(s, *, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and Student-t CI **over seeds** per dataset × penalty × method × metric (the replicate preset).

    Each model contributes one value (:func:`per_model`); ``n`` is the number of seeds (models).
    Where a group has a single model (ROAR's random-ranking control, filed once per dataset) the
    interval is over its ROAR repeats instead, and ``over`` says so. ``values`` lists the per-seed
    values (for plots and for anyone re-checking the interval).
    """
    s = as_study(s)
    pm = per_model(s)
    rows = []
    for key, g in pm.groupby(["dataset", "penalty", "method", "metric"], sort=True):
        v = g.sort_values("seed")["value"].to_numpy(float)
        over = "seeds"
        if len(v) == 1 and key[3] in ("roar", "roar_clean"):
            r = roar_scores(s)
            col = "value" if key[3] == "roar" else "value_clean"
            v = r[(r["dataset"] == key[0]) & (r["penalty"] == key[1]) & (r["method"] == key[2])][col].to_numpy(float)
            over = "repeats"
        lo, hi = t_interval(v, confidence)
        fin = v[np.isfinite(v)]
        rows.append(
            (
                *key,
                higher_is_better(key[3]),
                len(fin),
                float(fin.mean()) if len(fin) else np.nan,
                lo,
                hi,
                float(fin.std(ddof=1)) if len(fin) > 1 else np.nan,
                over,
                json.dumps([round(x, 6) for x in fin]),
            )
        )
    out = pd.DataFrame(rows, columns=REPLICATE_COLUMNS[:-1])
    out["higher_is_better"] = out["higher_is_better"].astype(object)
    rnd = out[out["method"] == RANDOM_METHOD]
    own = rnd.set_index(["dataset", "penalty", "metric"])["mean"]
    ctrl = (
        rnd[rnd["metric"].isin(["roar", "roar_clean"])]
        .drop_duplicates(["dataset", "metric"])
        .set_index(["dataset", "metric"])["mean"]
    )
    out["random_mean"] = [
        np.nan if m == "" else own.get((d, p, k), ctrl.get((d, k), np.nan))
        for d, p, m, k in zip(out["dataset"], out["penalty"], out["method"], out["metric"])
    ]
    return sort_rows(out, s)


REPLICATE_COMPARE_COLUMNS = ["dataset", "method", "metric", "penalty", "baseline", "higher_is_better", "n",
                             "mean_diff", "diff_ci_low", "diff_ci_high", "statistic", "p_value", "p_adjusted",
                             "correction", "significant", "improved"]


def compare_replicates(
    s, baseline: str = "none", *, correction: str = "holm", alpha: float = 0.05, confidence: float = 0.95
) -> pd.DataFrame:
    """Each penalty against ``baseline`` over seeds: paired by seed (seed k of the penalty with seed k
    of the baseline: the same initialisation and data order), two-sided paired t-test on the per-model
    values of :func:`per_model`, p-values corrected across all rows (Holm by default). With 3 seeds
    the test has little power: a non-significant row is "not shown", not "no effect"."""
    from scipy import stats

    s = as_study(s)
    pm = per_model(s).dropna(subset=["seed"])
    rows = []
    for (dataset, method, metric), g in pm.groupby(["dataset", "method", "metric"], sort=True):
        base = g[g["penalty"] == baseline][["seed", "value"]]
        if base.empty:
            continue
        for penalty, p in g[g["penalty"] != baseline].groupby("penalty", sort=True):
            m = p[["seed", "value"]].merge(base, on="seed", suffixes=("", "_base"))
            d = (m["value"] - m["value_base"]).to_numpy(float)
            d = d[np.isfinite(d)]
            if len(d) >= 2 and np.any(d != d[0]):
                t = stats.ttest_rel(m["value"], m["value_base"], nan_policy="omit")
                stat, pv = float(t.statistic), float(t.pvalue)
            else:
                stat, pv = float("nan"), (1.0 if len(d) >= 2 and np.all(d == 0) else float("nan"))
            lo, hi = t_interval(d, confidence)
            md = float(d.mean()) if len(d) else float("nan")
            hib = higher_is_better(metric)
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "metric": metric,
                    "penalty": penalty,
                    "baseline": baseline,
                    "higher_is_better": hib,
                    "n": len(d),
                    "mean_diff": md,
                    "diff_ci_low": lo,
                    "diff_ci_high": hi,
                    "statistic": stat,
                    "p_value": pv,
                    "improved": None if hib is None or not np.isfinite(md) or md == 0 else bool((md > 0) == hib),
                }
            )
    out = pd.DataFrame(
        rows, columns=[c for c in REPLICATE_COMPARE_COLUMNS if c not in ("p_adjusted", "correction", "significant")]
    )
    out["p_adjusted"] = adjust(out["p_value"].to_numpy(float), correction) if len(out) else pd.Series(dtype=float)
    out["correction"] = correction
    out["significant"] = (out["p_adjusted"] < alpha) if len(out) else pd.Series(dtype=bool)
    out["significant"] = out["significant"].astype(bool)
    return sort_rows(out, s)[REPLICATE_COMPARE_COLUMNS]


def class_accuracy(s, labels: dict) -> pd.DataFrame:
    """Per (dataset, penalty, model_id, seed, label): the model's accuracy on the test images of that class,
    from its ``full_test_accuracy`` rows (one per test image, ``sample`` = the image's index) and ``labels``
    (dataset -> the test labels, indexed like ``sample``); ``n`` = images of the class."""
    s = as_study(s)
    ev = s.evaluation
    ev = ev[ev["metric"] == "full_test_accuracy"]
    cols = ["dataset", "penalty", "model_id", "seed", "label", "accuracy", "n"]
    parts = []
    for dataset, g in ev.groupby("dataset", sort=True):
        if dataset not in labels:
            continue
        y = np.asarray(labels[dataset])
        g = g.assign(label=y[g["sample"].to_numpy(int)])
        a = g.groupby(["dataset", "penalty", "model_id", "label"])["value"].agg(accuracy="mean", n="size")
        parts.append(a.reset_index())
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True).merge(_model_seeds(s), on="model_id", how="left")
    return out[cols].sort_values(["dataset", "penalty", "seed", "label"]).reset_index(drop=True)


def has_replicates(s) -> bool:
    """True when some (dataset, penalty) has several selected models (seeds evaluated as replicates)."""
    sel = as_study(s).selected
    return bool(len(sel)) and bool(sel.groupby(["dataset", "penalty"]).size().gt(1).any())




def cross_map_per_model(s, metric: str = "morf", method: str = "saliency") -> pd.DataFrame:
    """``metric`` of every selected model scored with each available map: dataset, penalty, model_id, seed,
    maps, value. ``maps`` is ``own`` (its own ``method`` maps), a penalty (the maps of that penalty's model of
    the same seed, ``evaluation.map_models``; a model of that penalty itself: its own maps) or ``random``
    (the random-map control of the model)."""
    s = as_study(s)
    pm = per_model(s)
    cols = ["dataset", "penalty", "model_id", "seed", "maps", "value"]
    own = pm[(pm["metric"] == metric) & (pm["method"] == method)]
    frames = [own.assign(maps="own"),
              pm[(pm["metric"] == metric) & (pm["method"] == RANDOM_METHOD)].assign(maps="random")]
    cm = s.cross_maps
    if len(cm):
        penalty_of = dict(zip(pm["model_id"], pm["penalty"]))
        cm = cm[(cm["metric"] == metric) & (cm["method"] == method) & cm["level"].isna() & (cm["sample"] >= 0)]
        v = (cm.assign(maps=cm["map_model"].map(penalty_of)).dropna(subset=["maps"])
             .groupby(["dataset", "penalty", "model_id", "maps"], sort=True)["value"].mean().reset_index())
        v = v.merge(own[["model_id", "seed"]].drop_duplicates(), on="model_id", how="left")
        frames.append(v)
        frames += [own[own["penalty"] == p].assign(maps=p) for p in sorted(set(v["maps"]))]  # the diagonal
    out = pd.concat([f[cols] for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    return out if out is not None else pd.DataFrame(columns=cols)


def cross_map_matrix(s, metric: str = "morf", method: str = "saliency") -> pd.DataFrame:
    """Mean over seeds of :func:`cross_map_per_model`: one row per dataset and scored penalty, one column per
    map (``own``, each map model's penalty, ``random``); NaN where a combination was not measured."""
    pm = cross_map_per_model(s, metric, method)
    if pm.empty:
        return pd.DataFrame()
    m = pm.groupby(["dataset", "penalty", "maps"])["value"].mean().unstack("maps")
    order = ["own"] + sorted(c for c in m.columns if c not in ("own", "random")) + ["random"]
    return m.reindex(columns=[c for c in order if c in m.columns]).reset_index()
