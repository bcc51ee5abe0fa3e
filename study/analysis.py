"""Analysis of a study folder: its tables as a :class:`Study` and the statistics of the report (pandas API).

::

    from study import analysis

    s = analysis.load("outputs/quick")          # a folder, or a URI pyarrow understands
    s.missing                                    # tables not written (yet): e.g. ['evaluation', 'roar', 'curves']
    s.trials, s.epochs, s.selected               # search stage (foundations.schemas schemas)
    s.evaluation, s.roar, s.curves               # evaluation stage
    s.summary()                                  # mean and 95% bootstrap CI per dataset × penalty × method × metric
    s.compare(baseline="none")                   # paired Wilcoxon vs the baseline, Holm-corrected, effect sizes
    s.pareto()                                   # accuracy–explanation fronts over all trials
    s.lambda_sweep()                             # validation metrics versus λ

Each function is also a module-level function taking the :class:`Study` (``analysis.summary(s)``).

Reading (schemas, Hive partitions, checks, :class:`SchemaError`, :class:`NotAStudyError`): :mod:`study.loading`;
tables not written yet are empty DataFrames with the right columns, listed in ``Study.missing`` (a study still
running, or a search without evaluation, can be analysed). The statistical primitives: :mod:`foundations.statistics`.

Statistics (docs/spec.md §5: aggregates are computed here, from the per-sample rows):

- **Confidence intervals**: ``scipy.stats.bootstrap`` of the mean (percentile method, 2000
  resamples by default), seeded per group from ``seed`` and the group's name, so results do not
  depend on the order of groups. Over samples for per-sample metrics; over repeats for ROAR
  (whose score is the area under retrained accuracy versus the fraction removed, per repeat).
- **Paired tests**: per (dataset, method, metric), each penalty's values are paired with the
  baseline's by sample index (ROAR: by repeat); ``scipy.stats.wilcoxon`` (two-sided, zero
  differences dropped), p-values corrected across all comparisons of the call (Holm by
  default, Benjamini–Hochberg selectable); effect sizes: matched-pairs rank-biserial
  correlation and Cohen's d_z (mean difference / SD of the differences).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from evaluation.metrics import registry as metric_registry
from foundations import schemas as R
from foundations.statistics import adjust, bootstrap_ci, front_mask, group_seed, paired_test
from study.loading import (
    TABLES,
    StudyError,
    conform,
    read_study,
    table_schema,
)

# Metrics of the model itself (not of an attribution method): shown as "test accuracy".
ACCURACY_METRICS = tuple(
    o.name for o in metric_registry.REGISTRY["accuracy"].outputs
)  # accuracy, test_accuracy, test_acc
RANDOM_METHOD = "random"
# docs/spec.md §4's order (tables and legends); the study's own order (config.yaml) comes first
PENALTY_ORDER = ("none", "gradient", "consistency", "smoothness", "locality", "fidelity", "symmetry")


# --------------------------------------------------------------------------- directions
def directions() -> dict[str, bool | None]:
    """Metric name -> higher is better (None: no direction, e.g. a curve point): every metric group
    and every output of :mod:`evaluation.metrics.registry` (which imports no torch)."""
    return metric_registry.directions()


_DIRECTIONS: dict[str, bool | None] | None = None


def higher_is_better(metric: str) -> bool | None:
    """Direction of ``metric``: exact name, else the longest known prefix (``faithfulness_x`` ->
    ``faithfulness``); None when unknown."""
    global _DIRECTIONS
    if _DIRECTIONS is None:
        _DIRECTIONS = directions()
    if metric in _DIRECTIONS:
        return _DIRECTIONS[metric]
    best = None
    for k in _DIRECTIONS:
        if metric.startswith(k + "_") and (best is None or len(k) > len(best)):
            best = k
    return None if best is None else _DIRECTIONS[best]


@dataclass
class Study:
    """The tables of one study folder (empty DataFrames for those not written yet)."""

    path: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    selected: pd.DataFrame
    evaluation: pd.DataFrame
    roar: pd.DataFrame
    curves: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    config_text: str = ""
    gallery: pd.DataFrame = field(default_factory=lambda: R.GALLERY.empty_table().to_pandas())
    cross_maps: pd.DataFrame = field(default_factory=pd.DataFrame)  # evaluation rows scored with another model's maps

    @classmethod
    def from_frames(cls, path: str = "<memory>", config: dict | None = None, **frames: pd.DataFrame) -> "Study":
        """A study from DataFrames (tables not given are empty); columns are checked."""
        tables, missing = {}, []
        gallery = frames.pop("gallery", None)
        if gallery is not None:
            t = pa.Table.from_pandas(gallery, preserve_index=False)
            tables["gallery"] = conform(t, R.GALLERY, f"{path}/gallery", {}).to_pandas()
        for name in TABLES:
            schema = table_schema(name)
            df = frames.pop(name, None)
            if df is None or len(df) == 0:
                missing.append(name)
                df = schema.empty_table().to_pandas() if df is None else df
            t = pa.Table.from_pandas(df, preserve_index=False)
            tables[name] = conform(t, schema, f"{path}/{name}", {}).to_pandas()
        if frames:
            raise ValueError(f"unknown table(s) {sorted(frames)}; valid: {', '.join(TABLES)}")
        return cls(path=path, missing=missing, config=dict(config or {}), **tables)

    @property
    def name(self) -> str:
        for t in (self.trials, self.selected, self.evaluation, self.roar, self.curves):
            if len(t):
                return str(t["study"].iloc[0])
        return str(self.config.get("name", "") or Path(self.path).name)

    @property
    def datasets(self) -> list[str]:
        seen = set()
        for t in (self.trials, self.selected, self.evaluation, self.roar, self.curves):
            seen.update(map(str, t["dataset"].dropna().unique()))  # unique first: the tables hold millions of rows
        order = list(self.config.get("datasets") or [])
        return [d for d in order if d in seen] + sorted(seen - set(order))

    @property
    def penalties(self) -> list[str]:
        """Penalties present, ``none`` first, then the config's order, then alphabetical."""
        seen = set()
        for t in (self.trials, self.selected, self.evaluation, self.roar, self.curves):
            seen.update(map(str, t["penalty"].dropna().unique()))
        return order_penalties(seen, self.config.get("penalties"))

    def notes(self) -> list[str]:
        """What is missing, in words."""
        out = []
        what = {
            "trials": "the search has not written any trial yet: no Pareto fronts or λ sweeps",
            "epochs": "no per-epoch records of the search",
            "selected": "no model selected yet (the search has not finished): no saliency gallery",
            "evaluation": "the evaluation stage has not written per-sample metrics: no summary table, "
            "comparisons, or Gaussian/square-block curves from per-sample rows",
            "roar": "no ROAR (remove-and-retrain) results",
            "curves": "no curves table: no MoRF curves "
                      "(Gaussian/square-block curves fall back to the evaluation table)",
        }
        for t in self.missing:
            out.append(f"`{t}` is missing: {what[t]}.")
        return out

    # the analysis functions as methods
    def summary(self, **kw) -> pd.DataFrame:
        return summary(self, **kw)

    def compare(self, baseline: str = "none", **kw) -> pd.DataFrame:
        return compare(self, baseline, **kw)

    def pareto(self, **kw) -> pd.DataFrame:
        return pareto(self, **kw)

    def lambda_sweep(self, **kw) -> pd.DataFrame:
        return lambda_sweep(self, **kw)

    def per_sample(self, **kw) -> pd.DataFrame:
        return per_sample(self, **kw)

    def curve(self, kind: str) -> pd.DataFrame:
        return curve(self, kind)


def order_penalties(names: Iterable[str], config_order: Iterable[str] | None = None) -> list[str]:
    names = set(names)
    order = ["none"] + [p for p in list(config_order or []) + list(PENALTY_ORDER) if p != "none"]
    out = []
    for p in order:
        if p in names and p not in out:
            out.append(p)
    return out + sorted(names - set(out))


def load(path_or_uri) -> Study:
    """Read every table of a study folder (a local path or a URI pyarrow understands).

    Raises:
        FileNotFoundError: the folder does not exist.
        NotAStudyError: it exists but holds no study table and no ``config.yaml``.
        SchemaError: a table's file lacks a column or holds one of the wrong type (names the file).
    """
    return Study(**read_study(path_or_uri))


def as_study(s) -> Study:
    return s if isinstance(s, Study) else load(s)


# --------------------------------------------------------------------------- statistics
def roar_scores(s: Study) -> pd.DataFrame:
    """ROAR scores per (dataset, penalty, model_id, method, repeat), two areas under retrained
    accuracy versus the fraction removed (lower = the attribution found the information):

    - ``value`` (metric ``roar``): trapezoid over the fractions removed only (t > 0), as before;
    - ``value_clean`` (metric ``roar_clean``, docs/spec.md §5): the same curve starting at t = 0 with the
      dataset's clean retrain of the same repeat (method ``""``, nothing removed); NaN without it.
    The clean retrains themselves are not scored (they are every curve's first point).
    """
    cols = ["dataset", "penalty", "model_id", "method", "repeat", "value", "value_clean", "n_fractions"]
    r = s.roar.dropna(subset=["fraction", "accuracy"])
    if r.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c.startswith("value") else "object") for c in cols})
    method = r["method"].fillna("").astype(str)
    clean = r[(method == "") & (r["fraction"] == 0)].groupby(["dataset", "repeat"])["accuracy"].mean().to_dict()
    rows = []
    for key, g in r[method != ""].groupby(["dataset", "penalty", "model_id", "method", "repeat"], sort=True):
        g = g[g["fraction"] > 0].groupby("fraction")["accuracy"].mean().sort_index()
        x, y = g.index.to_numpy(float), g.to_numpy(float)
        area = float(np.trapezoid(y, x)) if len(g) > 1 else float("nan")
        c = clean.get((key[0], key[4]))
        area_clean = float(np.trapezoid(np.r_[c, y], np.r_[0.0, x])) if c is not None and len(g) else float("nan")
        rows.append((*key, area, area_clean, len(g)))
    return pd.DataFrame(rows, columns=cols)


PER_SAMPLE_COLUMNS = ["dataset", "penalty", "model_id", "method", "metric", "level", "sample", "value", "source"]


def per_sample(s: Study, levels: bool = True) -> pd.DataFrame:
    """Long-form values: the evaluation rows plus one ROAR score per repeat (metric ``roar``,
    ``sample`` = repeat, unless the evaluation table already holds ``roar`` rows).

    ``source`` says where a row comes from (``evaluation`` or ``roar``). Aggregate rows
    (``sample`` = -1) are kept; ``levels=False`` keeps scalar metrics only (``level`` NaN).
    """
    e = s.evaluation
    ev = pd.DataFrame(
        {
            "dataset": e["dataset"].astype(str),
            "penalty": e["penalty"].astype(str),
            "model_id": e["model_id"].astype(str),
            "method": e["method"].fillna("").astype(str),
            "metric": e["metric"].astype(str),
            "level": e["level"].astype(float),
            "sample": e["sample"].astype("int64"),
            "value": e["value"].astype(float),
            "source": "evaluation",
        }
    )
    parts = [ev]
    if not (ev["metric"] == "roar").any():
        r = roar_scores(s)
        for metric, col in (("roar", "value"), ("roar_clean", "value_clean")):
            if len(r):
                parts.append(
                    pd.DataFrame(
                        {
                            "dataset": r["dataset"].astype(str),
                            "penalty": r["penalty"].astype(str),
                            "model_id": r["model_id"].astype(str),
                            "method": r["method"].astype(str),
                            "metric": metric,
                            "level": np.nan,
                            "sample": r["repeat"].astype("int64"),
                            "value": r[col].astype(float),
                            "source": "roar",
                        }
                    )
                )
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else ev
    if not levels:
        out = out[out["level"].isna()]
    return out.reset_index(drop=True)[PER_SAMPLE_COLUMNS]


SUMMARY_COLUMNS = [
    "dataset",
    "penalty",
    "model_id",
    "method",
    "metric",
    "level",
    "higher_is_better",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "ci_over",
    "random_mean",
    "test_acc",
    "test_acc_ci_low",
    "test_acc_ci_high",
    "lam",
    "val_acc",
    "val_morf",
]
GROUP = ["dataset", "penalty", "model_id", "method", "metric", "level"]


def _group_values(g: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Per-sample values of one group (aggregate rows only when there are no others)."""
    per = g[g["sample"] >= 0]
    if len(per):
        return per["value"].to_numpy(float), ("repeats" if (per["source"] == "roar").all() else "samples")
    return g["value"].to_numpy(float), "none"


def _selected_info(s: Study) -> pd.DataFrame:
    sel = s.selected
    cols = ["dataset", "penalty", "lam", "val_acc", "val_morf"]
    if sel.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=float if c in ("lam", "val_acc", "val_morf") else object) for c in cols}
        )
    return sel.drop_duplicates(["dataset", "penalty"], keep="last")[cols].astype({"dataset": str, "penalty": str})


def summary(
    s,
    *,
    levels: bool = False,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    ci_method: str = "percentile",
) -> pd.DataFrame:
    """Mean and bootstrap CI per dataset × penalty × model × attribution method × metric.

    One row per group of :func:`per_sample` (``levels=False``: scalar metrics only; ``True``
    adds one row per level of the levelled metrics, e.g. accuracy at each σ), excluding the
    model's test accuracy, which becomes the ``test_acc*`` columns of every row of the model
    (NaN when the evaluation did not record it). ``ci_over`` says what the interval
    resamples: ``samples``, ``repeats`` (ROAR) or ``none`` (aggregate rows only, no interval).
    ``lam``, ``val_acc``, ``val_morf`` come from the ``selected`` table.
    """
    s = as_study(s)
    data = per_sample(s, levels=levels)
    acc = data[data["metric"].isin(ACCURACY_METRICS) & data["level"].isna()]
    data = data[~data["metric"].isin(ACCURACY_METRICS)]
    rows = []
    for key, g in data.groupby(GROUP, sort=True, dropna=False):
        v, over = _group_values(g)
        lo, hi = (
            bootstrap_ci(v, confidence, n_resamples, group_seed(seed, *key), ci_method)
            if over != "none"
            else (float("nan"), float("nan"))
        )
        rows.append(
            (
                *key,
                higher_is_better(key[4]),
                int(np.isfinite(v).sum()) if over != "none" else 0,
                float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"),
                lo,
                hi,
                over,
            )
        )
    out = pd.DataFrame(rows, columns=GROUP + ["higher_is_better", "n", "mean", "ci_low", "ci_high", "ci_over"])
    # test accuracy per model (method-independent: one value per sample)
    arows = []
    for key, g in acc.groupby(["dataset", "penalty", "model_id"], sort=True):
        per = g[g["sample"] >= 0]
        v = per["value"].to_numpy(float) if len(per) else g["value"].to_numpy(float)
        lo, hi = (
            bootstrap_ci(v, confidence, n_resamples, group_seed(seed, *key, "accuracy"), ci_method)
            if len(per)
            else (np.nan, np.nan)
        )
        arows.append((*key, float(np.nanmean(v)), lo, hi))
    accdf = pd.DataFrame(
        arows, columns=["dataset", "penalty", "model_id", "test_acc", "test_acc_ci_low", "test_acc_ci_high"]
    )
    out = out.merge(accdf, on=["dataset", "penalty", "model_id"], how="left")
    out = out.merge(_selected_info(s), on=["dataset", "penalty"], how="left")
    out["random_mean"] = _random_control(out)
    out["n"] = out["n"].astype("int64")
    out["higher_is_better"] = out["higher_is_better"].astype(object)
    return sort_rows(out, s)[SUMMARY_COLUMNS]


def _random_control(out: pd.DataFrame) -> pd.Series:
    """Per row, the same metric (and level) of the random-attribution control: of the same model for the
    per-image metrics, of the dataset's random-ranking retrains for ROAR (one control per dataset);
    NaN for model-level rows (method "") and where no control was evaluated."""
    rnd = out[out["method"] == RANDOM_METHOD]
    lv = lambda df: df["level"].fillna(-1.0)  # noqa: E731 - NaN levels must match in a merge
    by_model = rnd.assign(_lv=lv(rnd)).set_index(["model_id", "metric", "_lv"])["mean"]
    by_model = by_model[~by_model.index.duplicated()]
    by_dataset = (
        rnd[rnd["metric"].isin(["roar", "roar_clean"])]
        .drop_duplicates(["dataset", "metric"])
        .set_index(["dataset", "metric"])["mean"]
    )
    vals = []
    for mid, ds, metric, level, method in zip(out["model_id"], out["dataset"], out["metric"], lv(out), out["method"]):
        if method == "":
            vals.append(np.nan)
        elif (mid, metric, level) in by_model.index:
            vals.append(float(by_model[(mid, metric, level)]))
        else:
            vals.append(float(by_dataset.get((ds, metric), np.nan)))
    return pd.Series(vals, index=out.index, dtype=float)


def sort_rows(df: pd.DataFrame, s: Study) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    rank = {p: i for i, p in enumerate(s.penalties)}
    keys = [c for c in ("dataset", "penalty", "model_id", "method", "metric", "level") if c in df.columns]
    df = df.assign(_p=df["penalty"].map(rank).fillna(len(rank)))
    keys = ["dataset", "_p"] + [k for k in keys if k not in ("dataset", "penalty")]
    return df.sort_values(keys, kind="stable").drop(columns="_p").reset_index(drop=True)


# --------------------------------------------------------------------------- paired comparison
COMPARE_COLUMNS = [
    "dataset",
    "method",
    "metric",
    "level",
    "penalty",
    "model_id",
    "baseline",
    "baseline_model_id",
    "higher_is_better",
    "n",
    "mean",
    "baseline_mean",
    "mean_diff",
    "diff_ci_low",
    "diff_ci_high",
    "statistic",
    "p_value",
    "p_adjusted",
    "correction",
    "significant",
    "rank_biserial",
    "cohens_d",
    "improved",
]


def _baseline_model(s: Study, dataset: str, baseline: str, models: list[str]) -> str:
    sel = s.selected
    chosen = sel[(sel["dataset"] == dataset) & (sel["penalty"] == baseline)]["trial_id"].astype(str).tolist()
    for m in chosen:  # the evaluation stage names a model "<penalty>-<trial_id>"
        for name in (m, f"{baseline}-{m}"):
            if name in models:
                return name
    return sorted(models)[0]


def compare(
    s,
    baseline: str = "none",
    *,
    correction: str = "holm",
    alpha: float = 0.05,
    levels: bool = False,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Each penalty against ``baseline`` on per-sample values paired by sample index.

    One row per (dataset, method, metric[, level], penalty ≠ baseline, model) whose baseline
    counterpart exists (same dataset, method, metric, level). The baseline model of a dataset is
    its selected model (or the first by id). ``mean_diff`` = penalty − baseline, with a bootstrap
    CI of the mean paired difference; ``p_adjusted`` corrects the Wilcoxon p-values across all
    rows of the result (``correction``: holm, bh, by, none); ``significant`` = p_adjusted < alpha;
    ``improved`` = the difference goes in the metric's better direction (None when the
    direction is unknown or the difference is 0). Aggregate rows (sample −1) are not compared.
    """
    s = as_study(s)
    data = per_sample(s, levels=levels)
    data = data[data["sample"] >= 0]
    rows = []
    keys = ["dataset", "method", "metric", "level"]
    for key, g in data.groupby(keys, sort=True, dropna=False):
        base = g[g["penalty"] == baseline]
        if base.empty:
            continue
        bm = _baseline_model(s, key[0], baseline, base["model_id"].unique().tolist())
        base = base[base["model_id"] == bm][["sample", "value"]]
        hib = higher_is_better(key[2])
        for (penalty, model_id), p in g[g["penalty"] != baseline].groupby(["penalty", "model_id"], sort=True):
            m = p[["sample", "value"]].merge(base, on="sample", suffixes=("", "_base"))
            t = paired_test(m["value"], m["value_base"])
            d = (m["value"] - m["value_base"]).to_numpy(float)
            lo, hi = bootstrap_ci(d, confidence, n_resamples, group_seed(seed, *key, penalty, model_id, "diff"))
            md = t["mean_diff"]
            improved = None if hib is None or not np.isfinite(md) or md == 0 else bool((md > 0) == hib)
            rows.append(
                {
                    "dataset": key[0],
                    "method": key[1],
                    "metric": key[2],
                    "level": key[3],
                    "penalty": penalty,
                    "model_id": model_id,
                    "baseline": baseline,
                    "baseline_model_id": bm,
                    "higher_is_better": hib,
                    "n": t["n"],
                    "mean": float(m["value"].mean()) if len(m) else np.nan,
                    "baseline_mean": float(m["value_base"].mean()) if len(m) else np.nan,
                    "mean_diff": md,
                    "diff_ci_low": lo,
                    "diff_ci_high": hi,
                    "statistic": t["statistic"],
                    "p_value": t["p_value"],
                    "rank_biserial": t["rank_biserial"],
                    "cohens_d": t["cohens_d"],
                    "improved": improved,
                }
            )
    out = pd.DataFrame(
        rows, columns=[c for c in COMPARE_COLUMNS if c not in ("p_adjusted", "correction", "significant")]
    )
    out["p_adjusted"] = adjust(out["p_value"].to_numpy(float), correction) if len(out) else pd.Series(dtype=float)
    out["correction"] = correction
    out["significant"] = (out["p_adjusted"] < alpha) if len(out) else pd.Series(dtype=bool)
    out["n"] = out["n"].astype("int64")
    out["significant"] = out["significant"].astype(bool)
    return sort_rows(out, s)[COMPARE_COLUMNS]


# --------------------------------------------------------------------------- search views
PARETO_COLUMNS = ["dataset", "penalty", "trial_id", "lam", "lr", "seed", "accuracy", "score", "accuracy_metric",
                  "score_metric", "on_dataset_front", "on_penalty_front", "selected"]


def _finished_trials(s: Study) -> pd.DataFrame:
    t = s.trials
    return t[t["status"].astype(str) != "error"]


def pareto(s, *, accuracy: str = "val_acc", score: str = "val_morf") -> pd.DataFrame:
    """Every finished trial (status not ``error``, both objectives finite) with its membership of
    the accuracy–explanation Pareto front of its dataset (all penalties) and of its own
    (dataset, penalty) search; both objectives are maximised. ``selected``: the trial is the
    selected model of its (dataset, penalty)."""
    s = as_study(s)
    t = _finished_trials(s)
    t = t[np.isfinite(t[accuracy].astype(float)) & np.isfinite(t[score].astype(float))].copy()
    if t.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PARETO_COLUMNS})
    t["accuracy"], t["score"] = t[accuracy].astype(float), t[score].astype(float)
    t["accuracy_metric"], t["score_metric"] = accuracy, score
    t["on_dataset_front"] = False
    t["on_penalty_front"] = False
    for _, g in t.groupby("dataset"):
        t.loc[g.index, "on_dataset_front"] = front_mask(g["accuracy"], g["score"])
    for _, g in t.groupby(["dataset", "penalty"]):
        t.loc[g.index, "on_penalty_front"] = front_mask(g["accuracy"], g["score"])
    sel = set(
        zip(s.selected["dataset"].astype(str), s.selected["penalty"].astype(str), s.selected["trial_id"].astype(str))
    )
    t["selected"] = [(d, p, i) in sel for d, p, i in zip(t["dataset"], t["penalty"], t["trial_id"])]
    out = t[PARETO_COLUMNS].astype({"on_dataset_front": bool, "on_penalty_front": bool, "selected": bool})
    out = out.sort_values(["dataset", "accuracy", "score"], ascending=[True, False, False], kind="stable")
    return out.reset_index(drop=True)


SWEEP_COLUMNS = [
    "dataset",
    "penalty",
    "trial_id",
    "lam",
    "lr",
    "seed",
    "metric",
    "value",
    "higher_is_better",
    "selected",
]


def lambda_sweep(s, *, metrics: Iterable[str] = ("val_acc", "val_morf"), baseline: str = "none") -> pd.DataFrame:
    """Long form: one row per finished trial of each penalty other than ``baseline`` (whose λ is
    meaningless) and per metric in ``metrics`` (trial columns) with a finite value; sorted by λ."""
    s = as_study(s)
    metrics = list(metrics)
    bad = [m for m in metrics if m not in s.trials.columns]
    if bad:
        raise ValueError(
            f"unknown trial metric(s) {bad}; numeric trial columns: "
            f"{[c for c in s.trials.columns if pd.api.types.is_float_dtype(s.trials[c])]}"
        )
    t = _finished_trials(s)
    t = t[t["penalty"].astype(str) != baseline]
    sel = set(
        zip(s.selected["dataset"].astype(str), s.selected["penalty"].astype(str), s.selected["trial_id"].astype(str))
    )
    base_cols = ["dataset", "penalty", "trial_id", "lam", "lr", "seed"]
    long = t[base_cols + metrics].melt(id_vars=base_cols, value_vars=metrics, var_name="metric", value_name="value")
    long = long[np.isfinite(long["value"].astype(float))].copy()
    long["value"] = long["value"].astype(float)
    long["higher_is_better"] = [higher_is_better(m) for m in long["metric"]]
    long["selected"] = [(d, p, i) in sel for d, p, i in zip(long["dataset"], long["penalty"], long["trial_id"])]
    long = long.sort_values(["dataset", "penalty", "metric", "lam", "trial_id"], kind="stable").reset_index(drop=True)
    return long[SWEEP_COLUMNS]


# --------------------------------------------------------------------------- curves
CURVE_COLUMNS = ["dataset", "penalty", "model_id", "method", "curve", "x", "y", "y_low", "y_high", "n", "source"]
# curve kind -> (names it may have in the curves table, per-level metric of the evaluation table)
CURVE_KINDS = {
    "morf": (("morf", "morf_curve"), "morf_curve"),
    "gaussian": (("gaussian", "gaussian_accuracy"), "gaussian_accuracy"),
    "square_block": (("square_block", "block_accuracy"), "block_accuracy"),
    "max_sensitivity": (("max_sensitivity",), "max_sensitivity"),
    "avg_sensitivity": (("avg_sensitivity",), "avg_sensitivity"),
    "block_infidelity": (("block_infidelity",), "block_infidelity"),
}


def curve(s, kind: str) -> pd.DataFrame:
    """Mean curve ``y(x)`` per (dataset, penalty, model, method) for ``kind``.

    ``roar``: from the ``roar`` table (x = fraction removed, y = mean accuracy over repeats,
    ``y_low``/``y_high`` = min/max over repeats; ``method`` includes the ``random`` control).
    Others (:data:`CURVE_KINDS`: ``morf``, ``gaussian``, ``square_block``, ``max_sensitivity``,
    ``avg_sensitivity``, ``block_infidelity``): the per-level per-sample rows of the evaluation
    table (y = mean over samples, low/high = 2.5 and 97.5 percentiles of the samples), else the
    ``curves`` table (under either of its names, e.g. ``morf`` or ``morf_curve``).
    Model-level curves (accuracy under noise) have ``method`` "".
    """
    s = as_study(s)
    empty = pd.DataFrame(
        {c: pd.Series(dtype=float if c in ("x", "y", "y_low", "y_high") else object) for c in CURVE_COLUMNS}
    )
    keys = ["dataset", "penalty", "model_id", "method"]
    if kind == "roar":
        src = s.roar.rename(columns={"fraction": "x", "accuracy": "y"})
        source, lo, hi = "roar", "min", "max"
    elif kind in CURVE_KINDS:
        names, metric = CURVE_KINDS[kind]
        e = s.evaluation
        src = e[(e["metric"] == metric) & e["level"].notna() & (e["sample"] >= 0)].rename(
            columns={"level": "x", "value": "y"}
        )
        source, lo, hi = "evaluation", (lambda v: v.quantile(0.025)), (lambda v: v.quantile(0.975))
        if src.empty:
            src = s.curves[s.curves["curve"].astype(str).isin(names)]
            source, lo, hi = "curves", "min", "max"
    else:
        raise ValueError(f"unknown curve {kind!r}; valid: roar, {', '.join(CURVE_KINDS)}")
    src = src.dropna(subset=["x", "y"])
    if src.empty:
        return empty
    src = src.assign(method=src["method"].fillna("").astype(str))
    g = src.groupby(keys + ["x"], sort=True)["y"]
    out = g.agg(y="mean", y_low=lo, y_high=hi, n="size").reset_index()
    out["curve"], out["source"] = kind, source
    return sort_rows(out, s)[CURVE_COLUMNS]


# --------------------------------------------------------------------------- provenance
def provenance(s: Study) -> dict:
    """Git commit(s) and package versions recorded by the stages (from ``trials``/``selected``)."""
    commits = sorted(
        (set(s.trials["git_commit"].dropna().astype(str)) | set(s.selected["git_commit"].dropna().astype(str))) - {""}
    )
    versions = {}
    for v in s.trials["versions"].dropna().astype(str).unique():
        try:
            versions.update(json.loads(v))
        except json.JSONDecodeError:
            pass
    return {"git_commits": commits, "versions": versions}




def main(argv: Sequence[str] | None = None) -> int:
    """``python -m study.analysis STUDY [--show ...]``: the analysis tables of a study, as text."""
    import argparse
    import sys

    shows = {"missing": None, "summary": summary, "compare": compare, "pareto": pareto, "lambda_sweep": lambda_sweep}
    p = argparse.ArgumentParser(
        prog="python -m study.analysis",
        description="Print the analysis tables of a study folder (or URI). From Python: "
        "`from study import analysis; s = analysis.load(path)`, see the module docstring.",
    )
    p.add_argument("study", help="study folder or URI, e.g. outputs/quick")
    p.add_argument(
        "--show",
        action="append",
        choices=list(shows),
        default=None,
        help="what to print (repeatable; default: missing and summary)",
    )
    a = p.parse_args(argv)
    try:
        s = load(a.study)
    except (StudyError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 500):
        for name in a.show or ["missing", "summary"]:
            if name == "missing":
                print(f"tables not written: {', '.join(s.missing) or '(none)'}")
                continue
            df = shows[name](s)
            print(f"\n== {name} ({len(df)} rows)\n" + (df.to_string(index=False) if len(df) else "(empty)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
