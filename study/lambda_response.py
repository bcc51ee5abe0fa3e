"""What each penalty does as its weight grows: a λ grid whose every model is evaluated (``lambda-response``).

A study whose ``search.space`` grids λ and whose ``search.select`` is ``every`` has, per penalty, every grid
point's every seed evaluated. This module turns its tables into

- :func:`points`: one value per (dataset, penalty, λ, seed, method, metric), the model's mean over its test
  images (:func:`study.replicates.per_model`), plus the validation accuracy and explanation score of its trial;
- :func:`summary`: mean, min and max over seeds per λ;
- :func:`rule_picks`: the λ the study's own selection rule (:func:`study.selection.select`, one model per
  penalty) picks from the grid, with the baseline accuracy and the tolerance it respects;
- :func:`search_vs_grid`: per penalty, the best validation explanation score within the accuracy tolerance
  found by the grid and by a search (``lambda-search``) with the same number of trainings;
- :func:`section`: the results page's section (a figure per metric, a table, the rule's picks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study import replicates, selection
from study.analysis import RANDOM_METHOD
from study.config import config_from_raw
from study.document import (Doc, Figure, Table, figure_legend, fmt_num, fmt_pct, grid_shape, hide_unused_axes,
                            style)

# (metric, method, label, scale): the metrics shown against λ; method "" = a property of the model
METRICS: list[tuple[str, str, str, float]] = [
    ("val_acc", "", "validation accuracy (%) ↑ (the rule's)", 100.0),
    ("full_test_accuracy", "", "test accuracy, all images (%) ↑", 100.0),
    ("morf", "saliency", "MoRF of Saliency ↑", 1.0),
    ("faithfulness_nested", "saliency", "faithfulness (nested) ↑", 1.0),
    ("faithfulness_correlation", "saliency", "faithfulness corr. ↑", 1.0),
    ("complexity", "saliency", "complexity ↓", 1.0),
    ("gaussian_auc_clean", "", "noise AUC ↑", 1.0),
    ("max_sensitivity", "saliency", "max-sensitivity ↓", 1.0),
    ("block_auc_clean", "", "block AUC ↑", 1.0),
    ("block_infidelity", "saliency", "block infidelity ↓", 1.0),
]
POINT_COLUMNS = ["dataset", "penalty", "lam", "seed", "trial_id", "method", "metric", "value"]


def points(s) -> pd.DataFrame:
    """Long form, one row per (dataset, penalty, λ, seed, method, metric): each evaluated model's value,
    plus its trial's ``val_acc`` and ``val_morf`` (method ""); the baseline's λ is 0."""
    sel = s.selected
    if sel.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    ids = sel.assign(model_id=sel["penalty"].astype(str) + "-" + sel["trial_id"].astype(str))
    ids = ids[["model_id", "trial_id", "lam"]].drop_duplicates("model_id")
    pm = replicates.per_model(s).merge(ids, on="model_id")
    val = sel.melt(id_vars=["dataset", "penalty", "lam", "seed", "trial_id"], value_vars=["val_acc", "val_morf"],
                   var_name="metric", value_name="value").assign(method="")
    out = pd.concat([pm[POINT_COLUMNS], val[POINT_COLUMNS]], ignore_index=True)
    out["lam"] = out["lam"].where(out["penalty"] != "none", 0.0).astype(float)
    return out.sort_values(["dataset", "penalty", "lam", "seed", "method", "metric"]).reset_index(drop=True)


def summary(pts: pd.DataFrame) -> pd.DataFrame:
    """Mean, min, max and number of seeds per (dataset, penalty, λ, method, metric)."""
    g = pts.dropna(subset=["value"]).groupby(["dataset", "penalty", "lam", "method", "metric"], sort=True)["value"]
    return g.agg(mean="mean", min="min", max="max", n="size").reset_index()


def rule_picks(s) -> pd.DataFrame:
    """Per (dataset, penalty): the trial the study's selection rule picks when it may keep one model
    (``search.select: rule``) from the grid, its λ and why (within the tolerance or the most accurate)."""
    cfg = config_from_raw(s.config)
    cfg.search.select = "rule"
    if s.trials.empty:
        return pd.DataFrame(columns=["dataset", "penalty", "lam", "seed", "val_acc", "val_morf", "baseline_val_acc",
                                     "tolerance", "within_tolerance"])
    picked = selection.select(cfg, s.trials, export=False)
    return picked[["dataset", "penalty", "lam", "seed", "val_acc", "val_morf", "baseline_val_acc", "tolerance",
                   "within_tolerance"]].reset_index(drop=True)


def _best_within(trials: pd.DataFrame, reference: float, tolerance: float) -> pd.DataFrame:
    """Per (dataset, penalty), the finished trial with the best val_morf among those within ``tolerance`` of
    ``reference`` validation accuracy (NaN where none is)."""
    ok = trials[(trials["status"] != "error") & np.isfinite(trials["val_acc"]) & np.isfinite(trials["val_morf"])]
    rows = []
    for (d, p), g in ok.groupby(["dataset", "penalty"], sort=True):
        w = g[g["val_acc"] >= reference - tolerance - 1e-12]
        best = w.sort_values(["val_morf", "val_acc"], ascending=False).iloc[0] if len(w) else None
        rows.append({"dataset": d, "penalty": p, "n_trials": len(g), "n_within": len(w),
                     "val_morf": best["val_morf"] if best is not None else np.nan,
                     "val_acc": best["val_acc"] if best is not None else np.nan,
                     "lam": best["lam"] if best is not None else np.nan})
    return pd.DataFrame(rows, columns=["dataset", "penalty", "n_trials", "n_within", "val_morf", "val_acc", "lam"])


def search_vs_grid(grid_trials: pd.DataFrame, search_trials: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per (dataset, penalty) other than ``none``: the best validation explanation score (val_morf) within
    ``tolerance`` of the reference accuracy found by the grid and by the search, and search − grid. The
    reference is the best ``none`` validation accuracy of both studies together, so that both are held
    to the same accuracy."""
    base = pd.concat([grid_trials, search_trials])
    base = base[(base["penalty"] == "none") & (base["status"] != "error")]
    rows = []
    for d in sorted(set(grid_trials["dataset"]) | set(search_trials["dataset"])):
        ref = float(base[base["dataset"] == d]["val_acc"].max()) if len(base) else np.nan
        g = _best_within(grid_trials[(grid_trials["dataset"] == d) & (grid_trials["penalty"] != "none")], ref,
                         tolerance)
        s = _best_within(search_trials[(search_trials["dataset"] == d) & (search_trials["penalty"] != "none")],
                         ref, tolerance)
        m = g.merge(s, on=["dataset", "penalty"], how="outer", suffixes=("_grid", "_search"))
        m["reference_val_acc"], m["tolerance"] = ref, tolerance
        m["difference"] = m["val_morf_search"] - m["val_morf_grid"]
        rows.append(m)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def marks(summ: pd.DataFrame, picks: pd.DataFrame) -> pd.DataFrame:
    """Where the figure's stars go: per (dataset, penalty) picked by the rule, every metric's mean over seeds at
    the picked λ (``y``, unscaled)."""
    p = picks[picks["penalty"] != "none"][["dataset", "penalty", "lam"]]
    m = summ.merge(p, on=["dataset", "penalty"], suffixes=("", "_picked"))
    m = m[np.isclose(m["lam"], m["lam_picked"])]
    return m[["dataset", "penalty", "lam", "method", "metric", "mean"]].rename(columns={"mean": "y"})


def _band(ax, x, lo, hi, color) -> None:
    ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)


def figure(figs, summ: pd.DataFrame, picks: pd.DataFrame, dataset: str, penalties: list[str]):
    """One panel per metric of :data:`METRICS`: x = λ (log), a line per penalty (mean over seeds, min–max band),
    the baseline as a horizontal band, a star at the λ the selection rule picks and, on the validation
    accuracy, the tolerance line it respects."""
    sd = summ[summ["dataset"] == dataset]
    shown = [(k, m, label, sc) for k, m, label, sc in METRICS if ((sd["metric"] == k) & (sd["method"] == m)).any()]
    if not shown:
        return None
    nr, nc = grid_shape(len(shown), max_cols=3)
    fig, axes = figs.new(nr, nc, 4.0 * nc, 3.1 * nr + 0.8)
    pk = picks[picks["dataset"] == dataset]
    stars = marks(sd, pk)
    for ax, (metric, method, label, scale) in zip(axes.ravel(), shown):
        v = sd[(sd["metric"] == metric) & (sd["method"] == method)]
        lams = sorted(set(v[v["penalty"] != "none"]["lam"]))
        base = v[v["penalty"] == "none"]
        if len(base) and lams:
            b = base.iloc[0]
            st = style("none", penalties)
            ax.axhline(scale * b["mean"], color=st["color"], lw=1.2, ls="--", label="none")
            _band(ax, [lams[0], lams[-1]], [scale * b["min"]] * 2, [scale * b["max"]] * 2, st["color"])
        for p in penalties:
            g = v[v["penalty"] == p].sort_values("lam")
            if p == "none" or g.empty:
                continue
            st = style(p, penalties)
            ax.plot(g["lam"], scale * g["mean"], color=st["color"], marker=st["marker"], ms=4, lw=1.3, label=p)
            _band(ax, g["lam"], scale * g["min"], scale * g["max"], st["color"])
            at = stars[(stars["penalty"] == p) & (stars["metric"] == metric) & (stars["method"] == method)]
            ax.plot(at["lam"], scale * at["y"], marker="*", ms=14, color=st["color"], mec="black", mew=0.6, lw=0)
        if metric == "val_acc" and len(pk):
            r = pk.iloc[0]
            ax.axhline(100 * (r["baseline_val_acc"] - r["tolerance"]), color="black", lw=0.8, ls=":",
                       label=f"tolerance ({100 * r['tolerance']:g} point below the best baseline)")
        ax.set_xscale("log")
        ax.set_xlabel("λ")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    hide_unused_axes(axes, len(shown))
    figure_legend(fig, axes)
    return figs.save(fig, f"{dataset}_lambda_response")


def _table(doc: Doc, summ: pd.DataFrame, picks: pd.DataFrame, dataset: str, penalties: list[str]) -> None:
    sd = summ[summ["dataset"] == dataset]
    cols = [(k, m, label, sc) for k, m, label, sc in METRICS if ((sd["metric"] == k) & (sd["method"] == m)).any()]
    rows = []
    for p in penalties:
        g = sd[sd["penalty"] == p]
        pick = picks[(picks["dataset"] == dataset) & (picks["penalty"] == p)]
        for lam in sorted(set(g["lam"])):
            at = g[np.isclose(g["lam"], lam)]
            mark = " ★" if len(pick) and p != "none" and np.isclose(float(pick["lam"].iloc[0]), lam) else ""
            cells = []
            for k, m, _, sc in cols:
                c = at[(at["metric"] == k) & (at["method"] == m)]
                v = c["mean"].iloc[0] if len(c) else np.nan
                cells.append(fmt_pct(v) if sc == 100 else fmt_num(v))
            n = int(at["n"].max()) if len(at) else 0
            rows.append([p, "–" if p == "none" else f"{lam:g}{mark}", str(n)] + cells)
    doc.table(Table(["penalty", "λ", "seeds"] + [c[2] for c in cols], rows, [], mark="",
                    caption=f"{dataset}: mean over seeds per λ; ★ = the λ the selection rule picks from this grid"))


def section(doc: Doc, s, figs, search=None) -> None:
    """The results page's λ-response section for study ``s`` (and, given ``search``, the search-vs-grid table)."""
    doc.h2("What each penalty does as λ grows", "lambda-response")
    pts = points(s)
    if pts.empty:
        doc.note(f"{s.name}: no evaluated models yet.")
        return
    summ, picks = summary(pts), rule_picks(s)
    cfg = s.config.get("search") or {}
    doc.p(
        f"Study `{s.name}`: every penalty trained at each λ of the grid "
        f"{((cfg.get('space') or {}).get('default') or {}).get('lam')}, {cfg.get('trials')} seeds per point, every "
        "model evaluated (lines: mean over seeds, bands: min–max over seeds; dashed: the baseline's mean, its band "
        "the baseline's seeds). ★ marks the λ that the study's selection rule picks from the grid: the best "
        "validation explanation score among the trials whose validation accuracy is within the tolerance of the "
        "best baseline trial (dotted line on the validation-accuracy panel); without such a trial, the most "
        "accurate one. Random-map values are in the machine-readable file "
        "[lambda_response.csv](results/lambda_response.csv)."
    )
    for dataset in sorted(set(pts["dataset"])):
        path = figure(figs, summ[summ["method"] != RANDOM_METHOD], picks, dataset, s.penalties)
        if path:
            doc.figure(Figure(path, f"{dataset}: every metric against λ, per penalty", f"{dataset} λ response"))
        _table(doc, summ[summ["method"] != RANDOM_METHOD], picks, dataset, s.penalties)
        p = picks[(picks["dataset"] == dataset) & (picks["penalty"] != "none")]
        doc.table(Table(["penalty", "λ picked", "val. acc. (%)", "val. MoRF", "within tolerance"],
                        [[r["penalty"], f"{r['lam']:g}", fmt_pct(r["val_acc"]), fmt_num(r["val_morf"]),
                          "yes" if r["within_tolerance"] else "no (the most accurate)"] for _, r in p.iterrows()],
                        [], mark="", caption=f"{dataset}: the selection rule applied to the grid (baseline "
                        f"validation accuracy {fmt_pct(p['baseline_val_acc'].max())} %, tolerance "
                        f"{fmt_pct(p['tolerance'].max())} point)"))
    if search is not None:
        _search_section(doc, s, search)


def _search_section(doc: Doc, grid, search) -> None:
    tol = float((grid.config.get("search") or {}).get("tolerance", 0.01))
    t = search_vs_grid(grid.trials, search.trials, tol)
    doc.h2("Does the search find it?", "search-vs-grid")
    if t.empty:
        doc.note("No trials to compare.")
        return
    doc.p(
        f"The project's own search (study `{search.name}`: Optuna's TPE over the default λ range, the same "
        "number of trainings per penalty as the grid) against the grid of the previous section: per penalty, the "
        "best validation explanation score (MoRF of Saliency on the same validation images) among the trials "
        "whose validation accuracy is within the tolerance of the best baseline trial of both studies, "
        f"{fmt_pct(t['reference_val_acc'].max())} % − {fmt_pct(tol)} point. Search − grid > 0: the "
        "search found a better admissible model."
    )
    rows = [[r["penalty"], f"{fmt_num(r['val_morf_grid'])} (λ {r['lam_grid']:.3g}, {int(r['n_within_grid'])}/"
             f"{int(r['n_trials_grid'])} within)", f"{fmt_num(r['val_morf_search'])} (λ {r['lam_search']:.3g}, "
             f"{int(r['n_within_search'])}/{int(r['n_trials_search'])} within)", fmt_num(r["difference"])]
            for _, r in t.iterrows()]
    doc.table(Table(["penalty", "grid: best val. MoRF", "search: best val. MoRF", "search − grid"], rows, [],
                    mark="", caption="validation explanation score of the best admissible trial; n within = "
                    "trials within the accuracy tolerance"))
