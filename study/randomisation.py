"""Are the maps about the model at all? The model-parameter randomisation test (``mprt``) on the results page.

A study evaluated with the opt-in metric ``mprt`` (:mod:`evaluation.metrics.mprt`) has, per model, method and
test image, the Spearman rank correlation and the SSIM between the evaluated map and the map of the same method
after the top k layers were re-initialised (level k = 1..L, cascading from the output). This module turns those
rows into

- :func:`curves`: per (dataset, penalty, method, metric, k), the mean over each model's images, then the mean,
  min and max over the models (the seeds);
- :func:`section`: the results page's section: a figure per penalty (x = layers randomised, a line per method,
  the random-map control beside them) and a table at the first and the last level.

Lower = the map depends more on what the model learned; a map that ignores the weights stays at 1.
"""

from __future__ import annotations

import pandas as pd

from study.analysis import RANDOM_METHOD
from study.document import Doc, Figure, Table, figure_legend, fmt_num, grid_shape, hide_unused_axes

METRICS = {"mprt_spearman": "Spearman", "mprt_ssim": "SSIM"}  # metric -> label
COLUMNS = ["dataset", "penalty", "method", "metric", "level", "mean", "min", "max", "n"]


def curves(s) -> pd.DataFrame:
    """Per (dataset, penalty, method, metric, level): mean, min and max over the models of their mean over images."""
    ev = s.evaluation
    ev = ev[ev["metric"].isin(list(METRICS)) & (ev["sample"] >= 0)]
    if ev.empty:
        return pd.DataFrame(columns=COLUMNS)
    per_model = ev.groupby(["dataset", "penalty", "model_id", "method", "metric", "level"])["value"].mean()
    g = per_model.reset_index().groupby(["dataset", "penalty", "method", "metric", "level"])["value"]
    out = g.agg(mean="mean", min="min", max="max", n="size").reset_index()
    out["level"] = out["level"].astype(int)
    return out[COLUMNS]


def figure(figs, c: pd.DataFrame, dataset: str, metric: str, penalties: list[str], methods: list[str]):
    """A panel per penalty: x = layers randomised from the top, a line per method (mean over seeds, min–max band)."""
    d = c[(c["dataset"] == dataset) & (c["metric"] == metric)]
    shown = [p for p in penalties if (d["penalty"] == p).any()]
    if not shown:
        return None
    nr, nc = grid_shape(len(shown), max_cols=4)
    fig, axes = figs.new(nr, nc, 3.4 * nc, 2.9 * nr + 0.8, sharey=True)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, p in zip(axes.ravel(), shown):
        for m in methods:
            g = d[(d["penalty"] == p) & (d["method"] == m)].sort_values("level")
            if g.empty:
                continue
            ls = ":" if m == RANDOM_METHOD else "-"
            ax.plot(g["level"], g["mean"], color=colors[m], ls=ls, marker="o", ms=3, lw=1.3, label=m)
            ax.fill_between(g["level"], g["min"], g["max"], color=colors[m], alpha=0.15, lw=0)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(p, fontsize=9)
        ax.set_xlabel("layers randomised (from the top)")
        ax.grid(alpha=0.3)
    axes.ravel()[0].set_ylabel(METRICS[metric])
    hide_unused_axes(axes, len(shown))
    figure_legend(fig, axes)
    return figs.save(fig, f"{dataset}_mprt_{metric.removeprefix('mprt_')}")


def _cell(g: pd.DataFrame, metric: str, level: int) -> str:
    return fmt_num(g[(g["metric"] == metric) & (g["level"] == level)]["mean"].mean())


def section(doc: Doc, s, figs, heading: bool = True) -> pd.DataFrame:
    """The randomisation-test section for study ``s`` (``heading``: with the section's title and explanation, once
    per page); returns :func:`curves` (empty: no ``mprt`` rows, no section)."""
    c = curves(s)
    if c.empty:
        return c
    if heading:
        doc.h2("Are the maps about the model? The randomisation test", "mprt")
        doc.p(
            "Studies evaluated with the metric `mprt` (Adebayo et al., 2018; equal to Quantus' `MPRT` on identical "
            "inputs, tests/evaluation/test_mprt.py): the layers of each model are re-initialised one by one from the "
            "output towards the input, and after each step every method's map is recomputed and compared with the "
            "map of the trained model (Spearman rank correlation and SSIM of |map| / max |map|, per image). Lower is "
            "better: a map that stays the same when the weights are destroyed does not explain what the model "
            "learned. The random-map control is drawn from the seed alone, so it stays at 1 by construction. Lines: "
            "mean over the seeds' models of the mean over the test images; bands: min–max over seeds."
        )
    doc.p(f"Study `{s.name}`:")
    for dataset in sorted(set(c["dataset"])):
        d = c[c["dataset"] == dataset]
        methods = [m for m in dict.fromkeys(d["method"]) if m != RANDOM_METHOD] + (
            [RANDOM_METHOD] if (d["method"] == RANDOM_METHOD).any() else [])
        penalties = [p for p in s.penalties if (d["penalty"] == p).any()]
        for metric, label in METRICS.items():
            path = figure(figs, c, dataset, metric, penalties, methods)
            if path:
                doc.figure(Figure(path, f"{dataset}: {label} between the trained model's maps and the maps after "
                                  "randomising the top k layers, per penalty", f"{dataset} MPRT {label}"))
        last = int(d["level"].max())
        rows = []
        for p in penalties:
            for m in methods:
                g = d[(d["penalty"] == p) & (d["method"] == m)]
                if len(g):
                    rows.append([p, m, *(_cell(g, metric, k) for metric in METRICS for k in (1, last))])
        doc.table(Table(["penalty", "method", "Spearman, top layer", f"Spearman, all {last} layers",
                         "SSIM, top layer", f"SSIM, all {last} layers"], rows, [], mark="",
                        caption=f"{dataset}: similarity to the trained model's maps after randomising the top layer "
                        f"and all {last} layers (mean over seeds; ↓ = the map depends on the weights)"))
    return c
