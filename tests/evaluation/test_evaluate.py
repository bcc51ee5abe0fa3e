"""evaluate_model / curves_frame: long-form layout, consistency with the metrics, seeding, errors."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from evaluation.evaluate import (
    COLUMNS,
    CURVE_FRAME_COLUMNS,
    HIGHER_IS_BETTER,
    curves_frame,
    evaluate_model,
    select_samples,
)
from evaluation.metrics import METRICS
from evaluation.metrics.morf import morf
from evaluation.metrics.registry import REGISTRY

SMALL = {
    "faithfulness": {"n_subsets": 10},
    "gaussian": {"sigmas": [0.5, 1.0], "n_draws": 2},
    "square_block": {"s_max": [6, 10], "n_draws": 2},
}


@pytest.fixture(scope="module")
def frame(batch):
    model, x, labels, _, _ = batch
    timings: dict[str, float] = {}
    df = evaluate_model(
        model,
        x[:20],
        labels[:20],
        methods=["saliency", "random"],
        n_samples=8,
        seed=3,
        dataset="mnist",
        penalty="none",
        model_id="m0",
        metric_params=SMALL,
        timings=timings,
    )
    return df, timings


def test_layout(frame, batch):
    df, timings = frame
    assert list(df.columns) == COLUMNS
    assert set(df["metric"]) == {o.name for g in METRICS for o in REGISTRY[g].outputs}  # the default groups
    assert set(df["metric"]) <= set(HIGHER_IS_BETTER)
    assert set(timings) == {"attribution", "morf", "faithfulness", "complexity", "gaussian", "square_block"}
    idx = select_samples(20, 8, 3).tolist()
    per = df[df["sample"] >= 0]
    assert sorted(per["sample"].unique().tolist()) == idx
    assert (df[["dataset", "penalty", "model_id"]].drop_duplicates().values.tolist()) == [["mnist", "none", "m0"]]
    assert (df["seed"] == 3).all() and df["value"].notna().all()
    # model-level metrics once, with method ""; explanation metrics per method
    assert set(df.loc[df["metric"] == "gaussian_accuracy", "method"]) == {""}
    assert set(df.loc[df["metric"] == "block_infidelity", "method"]) == {"saliency", "random"}
    # levels: 20 MoRF fractions, the σ and s_max lists, NaN for scalars
    lv = lambda m: sorted(df.loc[df["metric"] == m, "level"].unique().tolist())  # noqa: E731
    assert (
        len(lv("morf_curve")) == 20
        and lv("gaussian_accuracy") == [0.0, 0.5, 1.0]
        and lv("block_accuracy") == [0.0, 6.0, 10.0]
    )  # clean point first (docs/spec.md §5)
    assert all(math.isnan(v) for v in lv("complexity"))
    # one per-sample row per (method, metric, level) and sample; the aggregate is the mean
    sal = per[(per["method"] == "saliency") & (per["metric"] == "morf_curve")]
    assert len(sal) == 8 * 20
    agg = df[(df["sample"] == -1) & (df["method"] == "saliency") & (df["metric"] == "morf")]["value"]
    assert len(agg) == 1
    assert agg.iloc[0] == pytest.approx(per[(per["method"] == "saliency") & (per["metric"] == "morf")]["value"].mean())


def test_values_match_direct_metric_call(frame, batch):
    df, _ = frame
    model, x, _, _, _ = batch
    idx = select_samples(20, 8, 3)
    from evaluation.attributions import attribute

    xs = x[:20][idx]
    t = model(xs).argmax(1)
    r = morf(model, xs, t, attribute(model, xs, t, "saliency"))
    got = df[(df["method"] == "saliency") & (df["metric"] == "morf") & (df["sample"] >= 0)].sort_values("sample")
    torch.testing.assert_close(torch.tensor(got["value"].to_numpy()), r.score, atol=1e-6, rtol=0)


def test_curves_frame(frame):
    df, _ = frame
    c = curves_frame(df)
    assert list(c.columns) == CURVE_FRAME_COLUMNS
    assert set(c["curve"]) == {
        "morf_curve",
        "gaussian_accuracy",
        "max_sensitivity",
        "avg_sensitivity",
        "block_accuracy",
        "block_infidelity",
        "block_infidelity_raw",
    }
    morf_sal = c[(c["method"] == "saliency") & (c["curve"] == "morf_curve")]
    assert len(morf_sal) == 20 and morf_sal["x"].is_monotonic_increasing and morf_sal["y"].iloc[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="lacks columns"):
        curves_frame(pd.DataFrame({"a": [1]}))


def test_deterministic(frame, batch):
    df, _ = frame
    model, x, labels, _, _ = batch
    again = evaluate_model(
        model,
        x[:20],
        labels[:20],
        methods=["saliency", "random"],
        n_samples=8,
        seed=3,
        dataset="mnist",
        penalty="none",
        model_id="m0",
        metric_params=SMALL,
    )
    pd.testing.assert_frame_equal(df, again)
    other = evaluate_model(
        model,
        x[:20],
        labels[:20],
        methods=["random"],
        metrics=["faithfulness"],
        n_samples=8,
        seed=4,
        metric_params=SMALL,
    )
    assert select_samples(20, 8, 4).tolist() != select_samples(20, 8, 3).tolist()
    assert not other.empty


def test_errors(batch):
    model, x, labels, _, _ = batch
    with pytest.raises(ValueError, match="valid choices: saliency"):
        evaluate_model(model, x[:4], labels[:4], methods=["lime"])
    with pytest.raises(ValueError, match="valid choices: morf"):
        evaluate_model(model, x[:4], labels[:4], metrics=["roar"])
    with pytest.raises(ValueError, match="unknown parameter"):
        evaluate_model(model, x[:4], labels[:4], metric_params={"gaussian": {"sigma": [1.0]}})
    with pytest.raises(ValueError, match="unknown parameter"):
        evaluate_model(model, x[:4], labels[:4], method_params={"saliency": {"n_steps": 3}})
    with pytest.raises(ValueError, match="sigmas"):
        evaluate_model(
            model,
            x[:4],
            labels[:4],
            methods=["saliency"],
            metrics=["gaussian"],
            metric_params={"gaussian": {"sigmas": [1.0, 0.5]}},
        )
    with pytest.raises(ValueError, match="non-empty"):
        evaluate_model(model, x[:0], labels[:0])
