"""Whose maps, whose model: MoRF and faithfulness of one selected model scored with another model's maps.

With ``evaluation.map_models: [own, none, symmetry]`` every selected model A is also scored with the maps
of the ``none`` and the ``symmetry`` model (B: the selected model of that penalty with A's seed, else the
first one of the dataset): B's attribution maps of A's evaluated images, towards the class A predicts,
rank the pixels that MoRF removes and faithfulness sums; A's outputs are scored. This separates "the
penalty made the maps better" from "the penalty made the model more sensitive to removing pixels". The
rows go to the ``evaluation`` table with ``map_model`` = B's model id (the own maps' rows have none);
same images, per-chunk seeds and parameters as the own rows, so A scored with A's maps equals its own rows.
The task body is :func:`evaluation.stage.crossmap_task`.
"""

from __future__ import annotations

import functools

import pandas as pd
import pyarrow as pa
import torch

from foundations import schemas as results

GROUPS = ("morf", "faithfulness")  # the metric groups scored with another model's maps
SCHEMA = pa.schema(list(results.EVALUATION) + [("map_model", pa.string())])  # evaluation rows naming the maps


def map_model_for(selected: pd.DataFrame, row, penalty: str) -> str | None:
    """Model id of the selected model of ``penalty`` whose maps score ``row``'s model: the one with the same
    seed if there is one, else the first of the dataset; None if the penalty has no selected model."""
    d = selected[(selected["dataset"] == row["dataset"]) & (selected["penalty"] == penalty)]
    if d.empty:
        return None
    same = d[d["seed"] == row["seed"]] if "seed" in d and "seed" in row else d.iloc[0:0]
    r = (same if len(same) else d).sort_values("trial_id").iloc[0]
    return f"{r['penalty']}-{r['trial_id']}"  # evaluation.stage.model_id


def scored_rows(model, map_model, x, y, *, methods, seed, method_params=None, metric_params=None, baselines=None,
                groups=GROUPS) -> pd.DataFrame:
    """``evaluate_model``'s rows (per sample) of ``groups`` for ``model``, with the maps of ``map_model``."""
    from evaluation.attributions import attribute
    from evaluation.evaluate import _Rows
    from evaluation.metrics import registry
    from evaluation.metrics._common import MetricInput
    from evaluation.metrics.gaussian import predicted

    method_params, metric_params = dict(method_params or {}), dict(metric_params or {})
    t = predicted(model, x, 512)
    out = _Rows(torch.arange(len(x)).numpy())
    for method in methods:
        extra = {"baselines": baselines} if method == "deeplift_shap" else {}
        fn = functools.partial(attribute, map_model, method=method, seed=seed, **method_params.get(method, {}), **extra)
        a = fn(x, t)
        for g in groups:
            spec = registry.REGISTRY[g]
            inp = MetricInput(model, x, y, t, a, fn, seed=seed, params=dict(metric_params.get(g, {})))
            for output, values, levels in spec.rows_function()(inp):
                if not spec.output(output).model_level:
                    out.add(method, output, values, levels)
    df = out.frame("", "", "", seed)
    return df[df["sample"] >= 0].reset_index(drop=True)
