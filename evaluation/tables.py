"""The evaluation stage's tables: reading them, and the ``curves`` table derived from the other two.

Their schemas live with every other table's in :mod:`foundations.schemas`; the stage's task bodies
(:mod:`evaluation.stage`) write ``evaluation``, ``roar`` and ``gallery`` rows, one file per task.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from foundations import schemas as results
from foundations.schemas import CURVES, EVALUATION, ROAR

STAGE_SCHEMAS = {"evaluation": EVALUATION, "roar": ROAR, "curves": CURVES}  # the three tables of the stage
PARTS = results.PARTITIONS["evaluation"]


def _curve_rows(table: pd.DataFrame, by: list[str], value: str, curve, x: str) -> pd.DataFrame:
    """Mean, std and count of ``value`` per ``by`` group as curve rows (``curve``: a column name or a constant)."""
    c = table.groupby(by)[value].agg(["mean", "std", "count"]).reset_index()
    return pd.DataFrame({"dataset": c["dataset"], "penalty": c["penalty"], "model_id": c["model_id"],
                         "method": c["method"], "curve": c[curve] if curve in c else curve, "x": c[x],
                         "y": c["mean"], "y_std": c["std"], "n": c["count"]})


def write_curves(out: str | Path, study: str) -> pd.DataFrame:
    """Derive the ``curves`` table (mean y and its std over samples/repeats at each x)."""
    frames = []
    ev = read_stage_table(out, "evaluation")
    if not ev.empty:
        own = ev["map_model"].fillna("") == ""  # curves of the own maps only (cross-map rows name their map model)
        ev = ev[own & ev["level"].notna() & (ev["sample"] >= 0)]
        frames.append(_curve_rows(ev, ["dataset", "penalty", "model_id", "method", "metric", "level"], "value",
                                  "metric", "level"))
    ro = read_stage_table(out, "roar")
    if not ro.empty:
        frames.append(_curve_rows(ro, ["dataset", "penalty", "model_id", "method", "fraction"], "accuracy", "roar",
                                  "fraction"))
    if not frames:
        return pd.DataFrame(columns=CURVES.names)
    curves = pd.concat(frames, ignore_index=True)
    curves.insert(0, "study", study)
    for (ds, pen), g in curves.groupby(["dataset", "penalty"]):
        results.write_table(g, out, "curves", PARTS, "curves", schema=CURVES)
    return curves


def read_stage_table(out: str | Path, table: str) -> pd.DataFrame:
    """Read a stage table (an empty frame with the schema's columns if nothing was written yet)."""
    from evaluation.cross_maps import SCHEMA

    return results.read_table(out, table, SCHEMA if table == "evaluation" else STAGE_SCHEMAS[table], PARTS)
