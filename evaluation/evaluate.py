"""Evaluate one trained model: every attribution method × every metric, in long form (docs/spec.md §5).

``evaluate_model`` returns one row per (method, metric, level, sample) with the per-sample value,
plus aggregate rows (``sample = -1``, the mean over samples) — the per-sample rows are always
kept; confidence intervals belong to the analysis. Columns: :data:`COLUMNS`.

Reported metrics (``metric`` column; ``level`` = removal fraction, σ, s_max or layers randomised, NaN for scalars):

==========================  =====================  ========  ==================================
metric                      level                  better    module
==========================  =====================  ========  ==================================
morf                        NaN                    higher    :mod:`evaluation.metrics.morf`
morf_curve                  fraction removed       —         morf
faithfulness_nested         NaN                    higher    :mod:`evaluation.metrics.faithfulness`
faithfulness_correlation    NaN                    higher    faithfulness
complexity                  NaN                    lower     :mod:`evaluation.metrics.complexity`
gaussian_accuracy           σ                      higher    :mod:`evaluation.metrics.gaussian`
gaussian_auc                NaN                    higher    gaussian (σ from the first σ > 0)
gaussian_auc_clean          NaN                    higher    gaussian (curve from σ = 0, clean)
max_sensitivity             σ                      lower     gaussian
avg_sensitivity             σ                      lower     gaussian
block_accuracy              s_max                  higher    :mod:`evaluation.metrics.square_block`
block_auc                   NaN                    higher    square_block (from the first s_max)
block_auc_clean             NaN                    higher    square_block (from s_max = 0, clean)
block_infidelity            s_max                  lower     square_block (normalised, scale-invariant)
block_infidelity_raw        s_max                  lower     square_block (raw, scale-dependent)
mprt_spearman               layer (1..L)           lower     :mod:`evaluation.metrics.mprt` (opt-in)
mprt_ssim                   layer (1..L)           lower     mprt (opt-in)
==========================  =====================  ========  ==================================

``gaussian_accuracy``, ``gaussian_auc[_clean]``, ``block_accuracy`` and ``block_auc[_clean]`` describe
the model, not an explanation: they are reported once, with ``method = ""``. The accuracy curves
include their clean point (level 0: σ = 0, no block) as docs/spec.md §5 asks.

The explained class (``target``) is the class predicted on the clean image (docs/spec.md §5); the
accuracies use the true labels ``y``. Every random draw derives from ``seed``.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from evaluation.attributions import METHODS, attribute, check_method
from evaluation.attributions import resolve_method_params as resolve_attribution_params
from evaluation.metrics import METRICS, registry
from evaluation.metrics._common import DEFAULT_BATCH_SIZE, MetricInput, check_batch, check_batch_size
from foundations import seeds
from evaluation.metrics.gaussian import predicted

COLUMNS = ["dataset", "penalty", "model_id", "method", "metric", "level", "sample", "value", "seed"]
CURVE_FRAME_COLUMNS = ["dataset", "penalty", "model_id", "method", "curve", "x", "y"]
DEFAULT_METHODS = ("saliency", "integrated_gradients", "input_x_gradient", "smoothgrad")

# Views of evaluation/metrics/registry.py (the one description of every metric), for this module's readers:
# metric name -> higher is better (None: a curve point, no direction on its own)
HIGHER_IS_BETTER: dict[str, bool | None] = {n: o.higher_is_better for n, o in registry.outputs("evaluate").items()}
# x-axis of each curve metric (for the curves table)
CURVE_X = registry.curve_axes("evaluate")
# tunable parameters of each metric group (defaults: registry.params())
METRIC_PARAMS = {g: set(p) for g, p in registry.params().items()}


def _check_names(kind: str, names: Sequence[str], valid: Sequence[str]) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError(f"{kind}: give at least one; valid choices: {', '.join(valid)}")
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"unknown {kind} {bad}; valid choices: {', '.join(valid)}")
    return names


def select_samples(n_total: int, n_samples: int | None, seed: int) -> Tensor:
    """Indices of the evaluated images: all if ``n_samples`` is None or ≥ n_total, else a sorted
    seeded random subset (``torch.randperm(n_total, generator=Generator().manual_seed(seed))``)."""
    if n_samples is None or n_samples >= n_total:
        return torch.arange(n_total)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1 or None, got {n_samples!r}")
    return seeds.subset(n_total, n_samples, seed)


class _Rows:
    """Accumulates long-form rows as numpy columns (one append per metric, not per sample)."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, method: str, metric: str, values: Tensor, levels: Tensor | None = None) -> None:
        v = values.detach().double().cpu().numpy()
        if levels is None:  # (B,)
            lev = np.full(v.shape[0], np.nan)
            smp = self.samples
        else:  # (B, L)
            lv = levels.double().cpu().numpy()
            lev = np.tile(lv, v.shape[0])
            smp = np.repeat(self.samples, lv.shape[0])
            v = v.reshape(-1)
        self.parts.append({"method": np.full(v.shape[0], method, dtype=object),
                           "metric": np.full(v.shape[0], metric, dtype=object),
                           "level": lev, "sample": smp, "value": v})

    def frame(self, dataset: str, penalty: str, model_id: str, seed: int) -> pd.DataFrame:
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in ("method", "metric", "level", "sample", "value")}
        df = pd.DataFrame(cols)
        agg = (df.groupby(["method", "metric", "level"], dropna=False, sort=False)["value"].mean().reset_index())
        agg["sample"] = -1
        df = pd.concat([df, agg[df.columns]], ignore_index=True)
        df["sample"] = df["sample"].astype("int64")
        df.insert(0, "dataset", dataset)
        df.insert(1, "penalty", penalty)
        df.insert(2, "model_id", model_id)
        df["seed"] = int(seed)
        return df[COLUMNS]


def evaluate_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    metrics: Sequence[str] = METRICS,
    n_samples: int | None = 1000,
    seed: int = 0,
    dataset: str = "",
    penalty: str = "",
    model_id: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
    attribution_batch_size: int = 256,
    method_params: dict[str, dict[str, Any]] | None = None,
    metric_params: dict[str, dict[str, Any]] | None = None,
    target: Tensor | None = None,
    timings: dict[str, float] | None = None,
    baselines: Tensor | None = None,
) -> pd.DataFrame:
    """All ``methods`` × ``metrics`` for ``model`` on (a seeded subset of) ``x``.

    Args:
        model: trained classifier; evaluated in eval mode (mode restored).
        x: float images (N, 1, 28, 28) in [0, 1]; y: their true labels (N,).
        methods: attribution methods (:data:`evaluation.attributions.METHODS`).
        metrics: metric groups (default :data:`evaluation.metrics.METRICS`; the opt-in ones, e.g. ``mprt``,
            only when named: ``registry.groups("evaluate")``).
        n_samples: images evaluated (seeded subset, see :func:`select_samples`); None = all.
        seed: seeds the subset, SmoothGrad/random maps, subsets, noise and blocks.
        dataset, penalty, model_id: copied into every row.
        batch_size: images per forward pass of the metrics.
        attribution_batch_size: ``batch_size`` of :func:`evaluation.attributions.attribute`.
        method_params: per-method parameters, e.g. ``{"integrated_gradients": {"n_steps": 32}}``.
        metric_params: per-group parameters, e.g. ``{"gaussian": {"sigmas": [0.5, 1.0]}}``.
        target: explained class per image of ``x`` (N,); default: the predicted class.
        timings: if a dict is given, seconds spent per stage (``attribution``, each metric group)
            are added to it.
        baselines: ``deeplift_shap``'s baseline distribution (training images,
            :func:`evaluation.captum_methods.draw_baselines`); needed only with that method.

    Returns:
        DataFrame with columns :data:`COLUMNS` (per-sample rows and ``sample = -1`` means).
    """
    check_batch(x, y)
    check_batch_size(batch_size)
    methods = _check_names("attribution methods", methods, METHODS)
    for m in methods:
        check_method(m)
    groups = registry.groups("evaluate")  # every registered metric group, in the registry's order
    metrics = _check_names("metrics", metrics, groups)
    method_params = dict(method_params or {})
    for m, params in method_params.items():
        check_method(m)
        resolve_attribution_params(m, params)
    metric_params = dict(metric_params or {})
    for group, params in metric_params.items():
        _check_names("metric_params keys", [group], groups)
        bad = sorted(set(params) - set(registry.REGISTRY[group].params))
        if bad:
            valid = sorted(registry.REGISTRY[group].params) or "none"
            raise ValueError(f"metric {group!r}: unknown parameter(s) {bad}; valid: {valid}")
    times: dict[str, float] = {} if timings is None else timings

    def timed(stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - t0
        return out

    idx = select_samples(x.shape[0], n_samples, seed)
    xs, ys = x[idx], torch.as_tensor(y)[idx].long()
    t = predicted(model, xs, batch_size) if target is None else torch.as_tensor(target)[idx].long().to(xs.device)
    rows = _Rows(idx.numpy())
    specs = [registry.REGISTRY[g] for g in groups if g in metrics]  # the registry's order, whatever the caller's
    compute = {spec.name: spec.rows_function() for spec in specs}
    model_level_done = False
    for method in methods:
        kwargs = dict(batch_size=attribution_batch_size, seed=seed, **method_params.get(method, {}),
                      **({"baselines": baselines} if method == "deeplift_shap" else {}))
        fn = functools.partial(attribute, model, method=method, **kwargs)
        a = timed("attribution", fn, xs, t)
        for spec in specs:
            inp = MetricInput(model, xs, ys, t, a, fn, seed=seed, batch_size=batch_size,
                              params=dict(metric_params.get(spec.name, {})), method=method, attribute_kwargs=kwargs)
            for output, values, levels in timed(spec.name, compute[spec.name], inp):
                if not spec.output(output).model_level:
                    rows.add(method, output, values, levels)
                elif not model_level_done:  # a value of the model, not of the method: once, method ""
                    rows.add("", output, values, levels)
        model_level_done = True
    return rows.frame(dataset, penalty, model_id, seed)


def curves_frame(results: pd.DataFrame) -> pd.DataFrame:
    """The mean curves of a results frame as a ``curves`` table (:data:`CURVE_FRAME_COLUMNS`).

    One row per (model, method, curve, x): the aggregate (``sample = -1``) rows of every metric
    with a level (MoRF curve, Gaussian accuracy/sensitivity, block accuracy/infidelity).
    """
    missing = [c for c in COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results frame lacks columns {missing}; expected {COLUMNS}")
    sel = results[(results["sample"] == -1) & results["level"].notna() & results["metric"].isin(list(CURVE_X))]
    out = sel.rename(columns={"metric": "curve", "level": "x", "value": "y"})[CURVE_FRAME_COLUMNS]
    return out.sort_values(["dataset", "penalty", "model_id", "method", "curve", "x"]).reset_index(drop=True)
