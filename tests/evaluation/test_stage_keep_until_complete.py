"""Re-evaluating with other settings never deletes first: the old results (and the curves derived from
them) stay in the tables until every file of the new settings exists, then the new set is swapped in.
Real local Ray (2 CPUs), really trained models, real Parquet; the interrupt is a KeyboardInterrupt raised
in the stage's own progress callback after its first task of the new settings finished."""

from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
import pytest

from evaluation import stage
from tests.evaluation.stage_fixtures import make_selected, settings_with, small_settings


def _settle(ray, timeout: float = 120.0) -> None:
    """Wait until the tasks an interrupted run left behind have finished (all CPUs free again)."""
    deadline = time.time() + timeout
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)


def _files(out, table):
    return sorted(p.relative_to(out) for p in (out / table).rglob("*.parquet"))


@pytest.mark.ray
def test_an_interrupted_re_evaluation_keeps_the_old_results_and_a_finished_one_replaces_them(tmp_path, mnist,
                                                                                               ray_local):
    out = tmp_path / "study"
    selected = make_selected(out, mnist)
    a = small_settings(metrics=["morf"], n_samples=12, chunk_size=6)
    a = replace(a, evaluation=replace(a.evaluation, metrics=["morf"]))  # no ROAR: the metrics tables only
    stage.run_stage(selected, a, out, log=lambda _m: None)
    before = {t: _files(out, t) for t in ("evaluation", "curves", "gallery")}
    curves_before = pd.read_parquet(out / "curves")

    b = settings_with(a, n_samples=8, chunk_size=4)

    def stop_after_first_task(line: str) -> None:
        if "tasks done" in line:
            raise KeyboardInterrupt

    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        stage.run_stage(selected, b, out, log=lambda m: (logs.append(m), stop_after_first_task(m)), progress_every=0)
    _settle(ray_local)
    assert not any("removing" in line for line in logs), logs
    assert {t: _files(out, t) for t in before} == before, "the old settings' results were touched"
    ev = pd.read_parquet(out / "evaluation")
    ev = ev[ev["metric"] != "full_test_accuracy"]  # the whole test set, whatever n_samples is
    assert ev.groupby("model_id")["sample"].nunique().eq(12).all()  # the old 12 images, no mix with 8
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves"), curves_before)

    logs = []
    stats = stage.run_stage(selected, b, out, log=logs.append)
    assert stats["submitted"] < stats["total"], "the interrupted run's finished task was not reused"
    assert any("removing" in line and "other evaluation settings" in line for line in logs), logs
    ev = pd.read_parquet(out / "evaluation")
    ev = ev[ev["metric"] != "full_test_accuracy"]
    assert ev.groupby("model_id")["sample"].nunique().eq(8).all()
    assert len(_files(out, "evaluation")) == sum(t.kind == "metrics" for t in stage.plan_tasks(selected, b))
    assert not (out / stage.STAGING).exists()
    curves = pd.read_parquet(out / "curves")
    assert not curves.equals(curves_before) and set(curves["model_id"]) == set(ev["model_id"])


def test_other_evaluation_settings_do_not_rewrite_the_saved_config_until_their_results_are_complete(tmp_path):
    """search.check_output (every launch) keeps the saved evaluation section; evaluation_done saves the new one."""
    from study import saved_config, search
    from study.config import apply_overrides, config_from_raw, load_raw, read_saved

    raw = {**load_raw("quick"), "output": str(tmp_path / "s"), "data_root": "/nonexistent-data"}
    cfg = config_from_raw(dict(raw))
    search.check_output(cfg)
    new = config_from_raw(apply_overrides(dict(raw), [f"evaluation.n_samples={cfg.evaluation.n_samples // 2}"]))
    search.check_output(new)  # a --resume with --set evaluation...: nothing computed yet
    assert config_from_raw(read_saved(cfg.location)).evaluation == cfg.evaluation
    saved_config.evaluation_done(new)
    assert config_from_raw(read_saved(cfg.location)).evaluation == new.evaluation
