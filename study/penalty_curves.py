"""Every penalty's value per epoch for the selected models: the analysis view and the report's figure.

The epochs table holds, for every trained model and epoch, the six penalties measured on a fixed
validation batch (``val_gradient`` … ``val_symmetry``, :mod:`trainables.penalty_values`). Older
studies have none (the columns read as nulls) and get a note instead of the figure.
"""

from __future__ import annotations

import pandas as pd

from foundations.schemas import PENALTY_VALUE_NAMES
from study.document import Doc, Figure, figure_legend, grid_shape, hide_unused_axes, style

COLUMNS = tuple(f"val_{p}" for p in PENALTY_VALUE_NAMES)


def values_per_epoch(s, selected_only: bool = True) -> pd.DataFrame:
    """Long form: dataset, penalty (trained), trial_id, seed, epoch, measured (penalty), value. Only the
    selected models' trials unless ``selected_only=False``; rows without a value are dropped."""
    ep = s.epochs
    cols = [c for c in COLUMNS if c in ep.columns]
    if ep.empty or not cols:
        return pd.DataFrame(columns=["dataset", "penalty", "trial_id", "seed", "epoch", "measured", "value"])
    if selected_only:
        ep = ep.merge(s.selected[["dataset", "penalty", "trial_id", "seed"]], on=["dataset", "penalty", "trial_id"])
    else:
        ep = ep.assign(seed=pd.NA)
    long = ep.melt(id_vars=["dataset", "penalty", "trial_id", "seed", "epoch"], value_vars=cols,
                   var_name="measured", value_name="value")
    long["measured"] = long["measured"].str[len("val_"):]
    long = long.dropna(subset=["value"])
    return long.sort_values(["dataset", "measured", "penalty", "trial_id", "epoch"]).reset_index(drop=True)


def section(doc: Doc, s, figs, heading: bool = True) -> None:
    """One figure per dataset: a panel per measured penalty, a line per selected model (coloured by its penalty);
    ``heading=False`` adds only the figures (a page showing several studies' under one heading)."""
    from matplotlib.ticker import MaxNLocator

    if heading:
        doc.h2("Every penalty's value during training", "penalty-values")
    v = values_per_epoch(s)
    if v.empty:
        doc.note("No per-epoch penalty values: the epochs table has no `val_<penalty>` columns (a study written "
                 "before they were recorded).")
        return
    if heading:
        doc.p("After every epoch each trained model is measured with all six penalties on the same fixed, seeded "
              "validation batch (eval mode), whatever penalty it trains with: does training for one constraint "
              "lower the others, and how far is the baseline from each? Lower is better for every penalty.")
    for dataset in s.datasets:
        vd = v[v["dataset"] == dataset]
        if vd.empty:
            continue
        measured = [p for p in PENALTY_VALUE_NAMES if p in set(vd["measured"])]
        nr, nc = grid_shape(len(measured), max_cols=3)
        fig, axes = figs.new(nr, nc, 3.6 * nc, 2.9 * nr + 0.7)
        for ax, m in zip(axes.ravel(), measured):
            vm = vd[vd["measured"] == m]
            for penalty in s.penalties:
                first = True
                for _, g in vm[vm["penalty"] == penalty].groupby("trial_id"):
                    ax.plot(g["epoch"], g["value"], lw=1.2, ms=4, label=penalty if first else None,
                            **style(penalty, s.penalties))
                    first = False
            ax.set_title(f"{m} penalty value", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        hide_unused_axes(axes, len(measured))
        figure_legend(fig, axes)
        fig.suptitle(f"{dataset}: every penalty per epoch (lines: selected models, colour: penalty trained)",
                     fontsize=10)
        path = figs.save(fig, f"penalty_values_{dataset}")
        doc.figure(Figure(path, f"{dataset}: value of each penalty on a fixed validation batch after every epoch; "
                                "one panel per penalty measured, one line per selected model.",
                          f"penalty values {dataset}"))
