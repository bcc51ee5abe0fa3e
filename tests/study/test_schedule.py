"""The concurrent schedule (study/schedule.py) on a real local Ray with 6 logical CPUs.

One study of 2 datasets × 2 penalties × 2 trials, run twice: with every search and evaluation task
at once, and one search at a time followed by the evaluation stage. The seeded random sampler makes
each search's proposals independent of timing, so the two must give the same tables, row for row
(but times, ids and nodes). Then: SIGKILL the driver mid-study (searches and evaluation running),
rerun, and nothing finished is redone, nothing is duplicated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from foundations import schemas
from evaluation import stage
from study import schedule, search
from study.config import load_config
from tests.ray_utils import ray_env, start_local_ray
from tests.study.processes import sigkill, signal_when

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]

SETTINGS = [
    "datasets=[mnist, fashion-mnist]", "penalties=[none, gradient]", "trials=2", "epochs=1",
    "sampler=random", "data_fraction=0.01", "val_limit=300", "explain_n=20", "max_concurrent_trials=2",
    "per_dataset={fashion-mnist: {model: cnn3b}}",
    "evaluation.methods=[saliency]", "evaluation.metrics=[morf, complexity, roar]", "evaluation.n_samples=16",
    "evaluation.chunk_size=8", "evaluation.roar.fractions=[0.5]", "evaluation.roar.repeats=1",
    "evaluation.roar.epochs=1", "evaluation.roar.data_fraction=0.01", "evaluation.roar.n_test=200",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_root):
    import ray

    start_local_ray(num_cpus=6)
    try:
        root = tmp_path_factory.mktemp("schedule")
        conc = load_config("quick", SETTINGS + [f"output={root / 'concurrent'}", f"data_root={data_root}"])
        t0 = time.time()
        logs: list[str] = []
        sel_c = schedule.run_study(conc, log=logs.append, progress_every=5)
        seq = load_config("quick", SETTINGS + [f"output={root / 'sequential'}", f"data_root={data_root}",
                                               "schedule=sequential"])
        sel_s = search.run_search(seq, verbose=0, log=lambda _m: None)
        stage.run_for_study(seq, sel_s, log=lambda _m: None)
        yield conc, seq, sel_c, sel_s, logs, t0
    finally:
        ray.shutdown()


def _by_seed(df: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """Replace model ids (penalty-trial_id, random per run) by penalty-seed."""
    ids = {f"{r['penalty']}-{r['trial_id']}": f"{r['penalty']}-s{r['seed']}" for _, r in selected.iterrows()}
    return df.assign(model_id=df["model_id"].map(ids))


VOLATILE = ["trial_id", "start_time", "end_time", "node_id", "hostname", "pid", "checkpoint_path", "train_seconds",
            "git_commit", "versions", "seconds", "ranks_seconds", "chunk", "weights_path", "config_path", "study"]


def _norm(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.drop(columns=[c for c in VOLATILE if c in df.columns]).sort_values(keys).reset_index(drop=True)


def test_searches_overlap_and_evaluation_starts_before_the_last_search_ends(two_runs):
    conc, _, _, _, logs, _ = two_runs
    t = schemas.read_table(conc.location, "trials")
    spans = {(r["dataset"], r["penalty"]): [] for _, r in t.iterrows()}
    for _, r in t.iterrows():
        spans[(r["dataset"], r["penalty"])].append((r["start_time"], r["end_time"]))
    overlaps = 0
    keys = sorted(spans)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            overlaps += any(s1 < e2 and s2 < e1 for s1, e1 in spans[a] for s2, e2 in spans[b])
    assert overlaps >= 3, "trials of different searches never ran at the same time"
    # evaluation tasks record their start in .tasks/<key>.json
    starts = [json.loads(p.read_text())["time"] for p in (Path(conc.location) / ".tasks").glob("*.json")]
    assert starts and min(starts) < t["end_time"].max().timestamp(), (
        "no evaluation task started before the last search ended"
    )
    assert any("model(s) selected" in line and "running" in line for line in logs)
    assert any(line.startswith("[search] fashion-mnist/gradient: 2 trials") for line in logs)


def test_the_whole_evaluation_plan_is_printed_before_the_first_search(two_runs):
    """Under the concurrent schedule: the evaluation's size is printed before any search runs,
    and it is the plan the stage then ran (4 selected models; 2 chunks of 8 images, 1 ROAR retrain each)."""
    conc, _, sel_c, _, logs, _ = two_runs
    lines = [x for msg in logs for x in msg.splitlines()]
    plan = [i for i, x in enumerate(lines) if x.startswith("[evaluate] plan:")]
    first_event = min(i for i, x in enumerate(lines) if x.startswith(("[search]", "[study] ")))
    assert len(plan) == 2 and max(plan) < first_event, lines[:6]
    s = stage.settings_from_config(conc)
    tasks = stage.plan_tasks(sel_c, s)
    assert lines[plan[0]].startswith(f"[evaluate] plan: {len(sel_c)} model(s); "
                                     f"{sum(t.kind == 'metrics' for t in tasks)} metric chunk(s) (16 test images")
    assert f"{sum(t.kind == 'roar' for t in tasks)} ROAR retrain(s)" in lines[plan[1]]


def test_concurrent_tables_equal_the_sequential_ones_row_for_row(two_runs):
    conc, seq, sel_c, sel_s, _, _ = two_runs
    keys = ["dataset", "penalty", "seed"]
    tc, ts = schemas.read_table(conc.location, "trials"), schemas.read_table(seq.location, "trials")
    assert len(tc) == len(ts) == 8
    tc = tc.drop(columns=["train_config"])
    ts = ts.drop(columns=["train_config"])
    pd.testing.assert_frame_equal(_norm(tc, keys), _norm(ts, keys), check_dtype=False)
    pd.testing.assert_frame_equal(_norm(sel_c, keys), _norm(sel_s, keys), check_dtype=False)
    for table, k in (
        ("evaluation", ["dataset", "penalty", "model_id", "method", "metric", "level", "sample"]),
        ("roar", ["dataset", "penalty", "model_id", "method", "fraction", "repeat"]),
    ):
        ec = _by_seed(schemas.read_table(conc.location, table), sel_c)
        es = _by_seed(schemas.read_table(seq.location, table), sel_s)
        assert len(ec) == len(es) > 0 and not ec.duplicated(k).any()
        pd.testing.assert_frame_equal(_norm(ec, k), _norm(es, k), check_dtype=False, check_categorical=False)


def test_search_limit_fills_the_cluster():
    cfg = load_config("paper", ["max_concurrent_trials=4"])
    assert schedule.search_limit(cfg, 16) == 5  # 4 searches × 4 trials fill 16 slots, one more fills their tails
    assert schedule.search_limit(load_config("paper", ["max_concurrent_total=64", "max_concurrent_trials=4"]), 16) == 17
    assert schedule.search_limit(load_config("paper", ["max_concurrent_searches=2"]), 16) == 2


def test_search_limit_is_one_search_when_one_fills_every_slot():
    """On a laptop (2 CPUs, 2 trials at once per search) a second search would only compete for the same cores."""
    assert schedule.search_limit(load_config("quick"), 2) == 1
    assert schedule.search_limit(load_config("quick"), 4) == 3  # two fill 4 slots, one more for their tails


def test_auto_schedule_is_sequential_where_one_search_fills_the_cluster():
    """`schedule: auto` (the default): concurrent only where one search's trials leave slots free; a preset's
    explicit schedule is kept whatever the cluster."""
    quick = load_config("quick")  # 2 trials at once, 1 CPU each
    assert quick.search.schedule == "auto"
    assert schedule.chosen(quick, 2)[0] == "sequential" and schedule.chosen(quick, 1)[0] == "sequential"
    assert schedule.chosen(quick, 3)[0] == "concurrent" and schedule.chosen(quick, 64)[0] == "concurrent"
    assert schedule.chosen(load_config("quick", ["resources={cpu: 2, gpu: 0}"]), 4)[0] == "sequential"  # 2 slots
    assert schedule.chosen(load_config("quick", ["max_concurrent_total=2"]), 64)[0] == "sequential"
    assert schedule.chosen(load_config("quick", ["schedule=concurrent"]), 2) == ("concurrent", "search.schedule")
    assert schedule.chosen(load_config("replicate"), 2)[0] == "concurrent"  # pinned: its wall time's schedule


def _tune_results(out: Path) -> dict[str, list[dict]]:
    res = {}
    for f in (out / "tune").glob("*/*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if lines:
            res[f"{f.parent.parent.name}/{f.parent.name}"] = lines
    return res


def test_sigkill_driver_mid_study_then_rerun_redoes_nothing(tmp_path, data_root):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "study.launch", "--output", str(out), "-q", "--num-cpus", "4", "--stage", "all"]
    for s in SETTINGS + ["name=killed"]:
        cmd += ["--set", s]
    env = ray_env({**os.environ, "SALIENCY_DATA_ROOT": str(data_root)})

    def overlapping() -> bool:  # searches and evaluation both running: an evaluation file, an unfinished search
        done = {d.name for d in (out / "tune").glob("*") if (d / "search_done.json").exists()}
        return bool(list((out / "evaluation").rglob("*.parquet"))) and len(done) < 4

    signal_when(cmd, env, tmp_path / "run1.log", overlapping, sigkill, settle=1.0, timeout=600, wait=30,
                what="killed")
    before = _tune_results(out)
    finished = {k: v for k, v in before.items() if v[-1]["epoch"] == 1}
    files = {f: f.stat().st_mtime_ns for t in ("evaluation", "roar") for f in (out / t).rglob("*.parquet")}
    assert files and finished

    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials, epochs = schemas.read_table(out, "trials"), schemas.read_table(out, "epochs")
    assert len(trials) == 8 and (trials["status"] == "ok").all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 8
    after = _tune_results(out)
    for k, lines in finished.items():  # finished trials were not trained again
        assert [x["end_time"] for x in after[k]] == [x["end_time"] for x in lines]
    for f, m in files.items():  # finished evaluation tasks were not run again
        assert f.stat().st_mtime_ns == m
    ev, ro = schemas.read_table(out, "evaluation"), schemas.read_table(out, "roar")
    assert not ev.duplicated(["model_id", "method", "metric", "level", "sample"]).any()
    assert not ro.duplicated(["model_id", "method", "fraction", "repeat"]).any()
    assert set(ev["model_id"]) == {
        f"{r['penalty']}-{r['trial_id']}" for _, r in schemas.read_table(out, "selected").iterrows()
    }
