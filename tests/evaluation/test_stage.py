"""The evaluation stage on a real local Ray: tables, schemas, rerun, one-key recompute, worker kill."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from evaluation import stage, tables
from evaluation.evaluate import evaluate_model
from tests.evaluation.stage_fixtures import make_selected, small_settings


@pytest.fixture(scope="module")
def study(tmp_path_factory, mnist, ray_local):
    out = tmp_path_factory.mktemp("study")
    selected = make_selected(out, mnist)
    s = small_settings()
    logs: list[str] = []
    stats = stage.run_stage(selected, s, out, log=logs.append, progress_every=0)
    return out, selected, s, stats, logs


def _files(out, table):
    return sorted((out / table).rglob("*.parquet"))


def test_writes_all_tables_with_schema_and_computed_row_counts(study, mnist, trained_cnn3b):
    out, selected, s, stats, logs = study
    tasks = stage.plan_tasks(selected, s)
    n_metric = sum(t.kind == "metrics" for t in tasks)
    n_roar = sum(t.kind == "roar" for t in tasks)
    assert stats["submitted"] == len(tasks) == n_metric + n_roar
    # metric rows per image: counted from the library itself on two images
    from foundations.data import to_float

    ev = s.evaluation
    probe = evaluate_model(trained_cnn3b, to_float(mnist.test_x[:2]), mnist.test_y[:2], methods=ev.methods,
                           metrics=ev.evaluate_metrics, n_samples=2, seed=ev.seed)
    per_image = (probe["sample"] >= 0).sum() / 2 + 1  # + the clean-accuracy row
    ev = pd.read_parquet(out / "evaluation")
    full = ev[ev["metric"] == "full_test_accuracy"]  # every test image, once per model (chunk 0's task)
    assert len(full) == 10_000 * len(selected) and (full["method"] == "").all() and (full["chunk"] == 0).all()
    assert full.groupby("model_id")["sample"].nunique().eq(10_000).all()
    ev = ev[ev["metric"] != "full_test_accuracy"]
    assert len(ev) == per_image * s.evaluation.n_samples * len(selected)
    acc = ev[ev["metric"] == "accuracy"]
    assert len(acc) == s.evaluation.n_samples * len(selected) and set(acc["value"]) <= {0.0, 1.0}
    assert (acc["method"] == "").all()
    assert set(ev["penalty"].astype(str)) == set(selected["penalty"])
    ro = pd.read_parquet(out / "roar")
    # + the random control and the clean retrain (t = 0, docs/spec.md §5), once per dataset
    r = s.evaluation.roar
    assert len(ro) == n_roar == len(selected) * len(r.fractions) + len(r.fractions) + r.repeats
    assert set(ro["method"]) == {"saliency", "random", ""}
    assert (ro.loc[ro["method"] == "", "fraction"] == 0).all()
    assert ro["accuracy"].between(0, 1).all()
    for table, schema in tables.STAGE_SCHEMAS.items():
        for f in _files(out, table):
            file_schema = pq.read_schema(f)
            assert [n for n in schema.names if n not in tables.PARTS] == file_schema.names[: len(file_schema.names)]
    cv = pd.read_parquet(out / "curves")
    expected = (ev[ev["level"].notna()].groupby(["model_id", "method", "metric", "level"]).ngroups
                + ro.groupby(["model_id", "method", "fraction"]).ngroups)
    assert len(cv) == expected
    assert any("tasks done" in line for line in logs)  # progress with ETA
    # the same test images for every model (paired comparisons)
    samples = ev.groupby("model_id")["sample"].apply(lambda v: tuple(sorted(set(v))))
    assert samples.nunique() == 1


def test_rerun_submits_nothing_and_duplicates_nothing(study):
    out, selected, s, _, _ = study
    before = {t: len(pd.read_parquet(out / t)) for t in tables.STAGE_SCHEMAS}
    stats = stage.run_stage(selected, s, out, log=lambda _: None)
    assert stats["submitted"] == 0
    assert {t: len(pd.read_parquet(out / t)) for t in tables.STAGE_SCHEMAS} == before


def test_deleting_one_file_recomputes_exactly_that_key(study):
    out, selected, s, _, _ = study
    victim = _files(out, "roar")[0]
    mtimes = {f: f.stat().st_mtime_ns for f in _files(out, "roar") + _files(out, "evaluation") if f != victim}
    victim.unlink()
    stats = stage.run_stage(selected, s, out, log=lambda _: None)
    assert stats["submitted"] == 1 and victim.exists()
    assert all(f.stat().st_mtime_ns == m for f, m in mtimes.items())


def test_killed_worker_is_retried(study):
    out, selected, s, _, _ = study
    for f in _files(out, "roar"):
        f.unlink()
    markers = out / ".tasks"
    for m in markers.glob("roar__*.json"):
        m.unlink()
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(stage.run_stage(selected, s, out, log=lambda _: None)))
    th.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline:
        found = sorted(markers.glob("roar__*.json"))
        if found:
            info = json.loads(found[0].read_text())
            os.kill(info["pid"], signal.SIGKILL)
            killed = (found[0].name, info["pid"])
        time.sleep(0.02)
    th.join(timeout=600)
    assert killed is not None and not th.is_alive()
    ro = pd.read_parquet(out / "roar")
    assert len(ro) == sum(t.kind == "roar" for t in stage.plan_tasks(selected, s))
    key = killed[0][len("roar__"):-len(".json")].rsplit("__s", 1)[0]  # without the settings fingerprint
    row_pid = ro.loc[
        ro.apply(lambda r: f"{r['model_id']}__{r['method'] or 'clean'}__t{r['fraction']:.2f}__r{r['repeat']}", axis=1)
        == key,
        "pid",
    ]
    assert len(row_pid) == 1 and int(row_pid.iloc[0]) != killed[1]  # redone by another worker


def test_map_models_add_only_the_cross_map_chunks_and_keep_them_out_of_the_own_tables(study):
    """``evaluation.map_models: [own, none]``: the gradient model is also scored with the none model's maps
    (its chunks only are new); the rows name the map model, the curves and the analysis keep them apart."""
    from dataclasses import replace

    from study import analysis as A
    from study.loading import read_study

    out, selected, s, _, _ = study
    cross_s = replace(s, evaluation=replace(s.evaluation, map_models=["own", "none"]))
    curves_before = len(pd.read_parquet(out / "curves"))
    stats = stage.run_stage(selected, cross_s, out, log=lambda _: None)
    n_chunks = s.evaluation.n_samples // s.evaluation.chunk_size
    assert stats["submitted"] == n_chunks  # the none model is not scored with its own penalty's maps
    ev = tables.read_stage_table(out, "evaluation")
    cross = ev[ev["map_model"].fillna("") != ""]
    assert set(cross["model_id"]) == {"gradient-t1"} and set(cross["map_model"]) == {"none-t0"}
    assert set(cross["metric"]) >= {"morf", "faithfulness_nested"} and "complexity" not in set(cross["metric"])
    assert len(pd.read_parquet(out / "curves")) == curves_before
    st = A.Study(**read_study(out))  # the analysis sees the own rows only, the cross-map rows beside them
    assert len(st.cross_maps) == len(cross) and "map_model" not in st.evaluation.columns
    assert len(st.evaluation) == len(ev) - len(cross)
