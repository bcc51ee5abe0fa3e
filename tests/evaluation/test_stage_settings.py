"""Re-evaluation with other settings: a task's key covers every setting that changes its rows,
so a rerun with other settings recomputes exactly the affected tasks and removes the rows they replace; the
planned work is printed before the stage starts. Real local Ray (2 CPUs), real Parquet."""

from __future__ import annotations

import pandas as pd
import pytest

from evaluation import stage
from tests.evaluation.stage_fixtures import make_selected, settings_with, small_settings


@pytest.fixture(scope="module")
def first(tmp_path_factory, mnist, ray_local):
    out = tmp_path_factory.mktemp("resettings")
    selected = make_selected(out, mnist)
    s = small_settings(metrics=["morf", "complexity"], n_samples=12, chunk_size=12, roar_fractions=[0.5])
    logs: list[str] = []
    stage.run_stage(selected, s, out, log=logs.append, progress_every=0)
    return out, selected, s, logs


def _mtimes(out, table):
    return {f: f.stat().st_mtime_ns for f in (out / table).rglob("*.parquet")}


def test_the_plan_is_printed_before_the_stage_runs(first):
    _, selected, s, logs = first
    lines = [x for msg in logs for x in msg.splitlines()]
    plan = [line for line in lines if line.startswith("[evaluate] plan:")]
    tasks = stage.plan_tasks(selected, s)
    assert len(plan) == 2 and lines.index(plan[0]) < min(i for i, x in enumerate(lines) if "tasks done" in x)
    assert f"{sum(t.kind == 'metrics' for t in tasks)} metric chunk(s)" in plan[0] and "12 test images" in plan[0]
    assert f"{sum(t.kind == 'roar' for t in tasks)} ROAR retrain(s)" in plan[1] and "+ the clean t = 0" in plan[1]


def test_other_n_samples_recompute_the_metrics_only_and_replace_their_rows(first):
    out, selected, s, _ = first
    roar_before = _mtimes(out, "roar")
    ev_before = set(_mtimes(out, "evaluation"))
    s2 = settings_with(s, n_samples=8, chunk_size=8)
    logs: list[str] = []
    stats = stage.run_stage(selected, s2, out, log=logs.append)
    assert stats["submitted"] == sum(t.kind == "metrics" for t in stage.plan_tasks(selected, s2))  # ROAR untouched
    assert _mtimes(out, "roar") == roar_before
    assert not (set(_mtimes(out, "evaluation")) & ev_before), "the old settings' files were kept"
    assert any("removing" in line and "other evaluation settings" in line for line in logs)
    ev = pd.read_parquet(out / "evaluation")
    ev = ev[ev["metric"] != "full_test_accuracy"]  # the whole test set, whatever n_samples is
    assert ev.groupby("model_id")["sample"].nunique().eq(8).all()  # 8 images, not a mix of 12 and 8
    # rerunning the same settings does nothing
    assert stage.run_stage(selected, s2, out, log=lambda _m: None)["submitted"] == 0


def test_other_roar_training_recomputes_the_roar_tasks_only(first):
    out, selected, s, _ = first
    s3 = settings_with(s, n_samples=8, chunk_size=8)  # the metrics of the previous test stay valid
    ev_before = _mtimes(out, "evaluation")
    s4 = settings_with(s3, roar_n_test=150)
    stats = stage.run_stage(selected, s4, out, log=lambda _m: None)
    assert stats["submitted"] == sum(t.kind == "roar" for t in stage.plan_tasks(selected, s4))
    assert _mtimes(out, "evaluation") == ev_before
    ro = pd.read_parquet(out / "roar")
    assert (ro["n_test"] == 150).all() and len(ro) == sum(t.kind == "roar" for t in stage.plan_tasks(selected, s4))


def test_keys_fingerprint_the_settings_that_change_rows_and_nothing_else():
    s = small_settings()
    a = stage.fingerprints(s)
    assert stage.fingerprints(settings_with(s, cpu=2.0, max_in_flight=7, max_retries=1)) == a  # resources: same rows
    assert stage.fingerprints(settings_with(s, methods=["saliency", "random"]))["metrics"] != a["metrics"]
    assert stage.fingerprints(settings_with(s, methods=["saliency", "random"]))["roar"] == a["roar"]
    assert stage.fingerprints(settings_with(s, roar_epochs=2))["roar"] != a["roar"]
    assert stage.fingerprints(settings_with(s, metric_params={"gaussian": {"n_draws": 2}}))["metrics"] != a["metrics"]
