"""The search stage end to end on a real local Ray (2 CPUs): tables, selection, overlap, divergence.

One study for the module: MNIST, cnn3b, penalties ``none`` + ``gradient``, 2 trials each, 1 epoch
on 5% of the training split. The gradient search draws λ log-uniformly from [1e-2, 1e80] with a
seeded random sampler whose seed is picked so that exactly one of its two trials gets a λ that
overflows the loss (NaN/inf): that trial must fail with its reason while the study goes on.
"""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from foundations import model_paths, schemas
from study import search
from foundations.statistics import front_mask
from study.config import load_config

HUGE, SMALL = 1e50, 1.0


def _pick_seed() -> int:
    """A study seed whose gradient search draws one small λ and one overflowing λ."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in range(1000):
        cfg = _config("/unused", seed)
        st = optuna.create_study(sampler=search.make_sampler(cfg, "mnist", "gradient"), directions=["maximize"] * 2)
        lams = sorted(st.ask().suggest_float("lam", *cfg.space_for("gradient").lam, log=True) for _ in range(2))
        if lams[0] < SMALL and lams[1] > HUGE:
            return seed
    pytest.skip("no seed gives one small and one overflowing λ")


def _config(out, seed: int):
    return load_config("quick", [
        "name=test", f"output={out}", "datasets=[mnist]", "penalties=[none, gradient]", "trials=2",
        "epochs=1", "data_fraction=0.05", "val_limit=1000", "explain_n=50", "sampler=random", f"seed={seed}",
        "space.gradient.lam=[0.01, 1e80]", "max_failures=1", "max_concurrent_trials=2", "resources.cpu=1",

    ])


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_local, data_root):
    out = tmp_path_factory.mktemp("search")
    cfg = _config(out, _pick_seed())
    logs: list[str] = []
    import signal

    before = signal.getsignal(signal.SIGINT)
    selected = search.run_search(cfg, verbose=0, log=logs.append)
    # Tune installs its own SIGINT handler; left behind, Ctrl-C in the evaluation stage was swallowed
    assert signal.getsignal(signal.SIGINT) is before
    return cfg, selected, logs


def _files(cfg, table):
    return sorted((cfg.output_dir / table).rglob("*.parquet"))


def test_tables_have_declared_schemas_and_read_back(study):
    cfg, selected, logs = study
    for table in schemas.SEARCH_TABLES:
        schema = schemas.SCHEMAS[table]
        files = _files(cfg, table)
        assert files, table
        parts = schemas.PARTITIONS[table]
        for f in files:
            assert pq.read_schema(f).remove_metadata() == pa_schema_without(schema, parts), f
            assert f.name == ("test.parquet" if table == "selected" else f"mnist-{f.parent.name.split('=')[1]}.parquet")
        df = pd.read_parquet(cfg.output_dir / table)  # plain pandas, Hive partitions
        assert set(df.columns) == set(schema.names)
        assert pads.dataset(cfg.output_dir / table, partitioning="hive").count_rows() == len(df)
    trials = schemas.read_table(cfg.output_dir, "trials")
    assert list(trials.columns) == schemas.TRIALS.names
    assert len(trials) == 4 and trials.groupby("penalty").size().to_dict() == {"gradient": 2, "none": 2}
    epochs = schemas.read_table(cfg.output_dir, "epochs")
    ok = trials[trials["status"] == "ok"]
    assert sorted(epochs["trial_id"]) == sorted(ok["trial_id"])  # 1 epoch each, failed trial has none
    assert len(selected) == 2 and set(selected["penalty"]) == {"none", "gradient"}
    assert any(line.startswith("[search] mnist/gradient: 2 trials (1 ok, 1 failed)") for line in logs), logs


def pa_schema_without(schema, names):
    import pyarrow as pa

    return pa.schema([f for f in schema if f.name not in names])


def test_trials_record_config_seeds_provenance(study):
    cfg, _, _ = study
    t = schemas.read_table(cfg.output_dir, "trials")
    for _, g in t.groupby("penalty"):
        assert sorted(g["seed"]) == [cfg.seed, cfg.seed + 1]  # trial k trains with seed + k
    assert (t[t["penalty"] == "none"]["lam"] == 0).all()
    assert t["model"].eq("cnn3b").all() and t["data_fraction"].eq(0.05).all() and t["epochs"].eq(1).all()
    versions = json.loads(t["versions"].iloc[0])
    assert {"python", "torch", "ray", "optuna", "pyarrow"} <= set(versions) and versions["ray"]
    assert t["git_commit"].map(lambda c: isinstance(c, str)).all()
    assert (t["node_id"].str.len() > 0).all() and (t["pid"] > 0).all()
    assert (t["end_time"] > t["start_time"]).all()
    assert t["sampler_seed"].nunique() == 2  # one per (dataset, penalty)
    tc = json.loads(t["train_config"].iloc[0])
    assert tc["val_limit"] == 1000 and tc["split_seed"] == 0


def test_two_concurrent_trials_overlap_in_time(study):
    cfg, _, _ = study
    t = schemas.read_table(cfg.output_dir, "trials")
    ok = t[t["status"] == "ok"].sort_values("start_time")
    overlaps = [
        ((min(a.end_time, b.end_time) - max(a.start_time, b.start_time)).total_seconds(), a.pid != b.pid)
        for i, a in enumerate(ok.itertuples()) for b in list(ok.itertuples())[i + 1:]
    ]
    assert any(o > 0 and other_process for o, other_process in overlaps), overlaps


def test_diverged_trial_failed_with_reason_and_is_ignored(study):
    cfg, selected, _ = study
    t = schemas.read_table(cfg.output_dir, "trials")
    failed = t[t["status"] == "error"]
    assert len(failed) == 1
    row = failed.iloc[0]
    assert row["penalty"] == "gradient" and row["lam"] > HUGE
    assert "NonFiniteLossError" in row["error"] and "non-finite loss" in row["error"], row["error"]
    assert not row["on_pareto_front"] and np.isnan(row["val_acc"])
    g = selected.set_index("penalty").loc["gradient"]
    assert g["trial_id"] != row["trial_id"] and g["lam"] < SMALL
    assert g["n_trials"] == 2 and g["n_failed"] == 1


def test_selection_rule_and_pareto_front(study):
    cfg, selected, _ = study
    t = schemas.read_table(cfg.output_dir, "trials")
    done = t[t["status"] == "ok"]
    baseline = done[done["penalty"] == "none"]["val_acc"].max()
    for _, s in selected.iterrows():
        cand = done[(done["penalty"] == s["penalty"]) & (done["val_acc"] >= baseline - cfg.search.tolerance)]
        if s["within_tolerance"]:
            assert s["val_morf"] == cand["val_morf"].max()
        else:
            assert cand.empty
        assert s["baseline_val_acc"] == baseline
    none = done[done["penalty"] == "none"]
    assert none["on_pareto_front"].sum() >= 1


def test_selected_model_reloads_and_reproduces_its_metrics(study, mnist):
    from trainables.models import build_model
    from evaluation.metrics.morf import explanation_score
    from trainables.train import TrainConfig, TrainRun, accuracy
    from foundations.data import to_float

    cfg, selected, _ = study
    for _, s in selected.iterrows():
        conf = json.loads(open(model_paths.resolve(cfg.location, s["config_path"])).read())
        tc = TrainConfig(**conf["train_config"])
        assert conf["trial"]["trial_id"] == s["trial_id"] and tc.lam == pytest.approx(s["lam"])
        model = build_model(s["model"])
        model.load_state_dict(torch.load(model_paths.resolve(cfg.location, s["weights_path"]), map_location="cpu"))
        val_x, val_y = TrainRun(tc, mnist).val_set()
        assert accuracy(model, val_x, val_y) == pytest.approx(s["val_acc"], abs=1e-9)
        score = explanation_score(model, to_float(mnist.val_x[: cfg.search.explain_n]), cfg.search.morf_levels)
        assert score == pytest.approx(s["val_morf"], abs=1e-6)


def test_rerun_duplicates_nothing(study):
    cfg, selected, _ = study
    before = {t: schemas.read_table(cfg.output_dir, t) for t in schemas.SEARCH_TABLES}
    files = {t: _files(cfg, t) for t in schemas.SEARCH_TABLES}
    logs: list[str] = []
    again = search.run_search(cfg, verbose=0, log=logs.append)
    assert all("(already done)" in line for line in logs) and len(logs) == 2
    for t in schemas.SEARCH_TABLES:
        after = schemas.read_table(cfg.output_dir, t)
        assert len(after) == len(before[t]) and _files(cfg, t) == files[t]
    pd.testing.assert_frame_equal(again.reset_index(drop=True), selected.reset_index(drop=True))


def test_changed_search_settings_are_refused(study):
    cfg, _, _ = study
    other = load_config("quick", [f"output={cfg.output_dir}", "name=test", "trials=3"])
    with pytest.raises(ValueError, match="trials: 2 -> 3"):
        search.check_output(other)


def test_write_and_read_table_helpers(tmp_path):
    import pyarrow as pa

    schema = pa.schema([("dataset", pa.string()), ("method", pa.string()), ("value", pa.float64())])
    df = pd.DataFrame({"dataset": ["mnist", "mnist", "fashion-mnist"], "method": ["a", "b", "a"],
                       "value": [1.0, 2.0, 3.0]})
    for _ in range(2):  # rewriting with the same key replaces, never duplicates
        paths = schemas.write_table(df, tmp_path, "custom", ["dataset"], key="w1", schema=schema)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "custom/dataset=fashion-mnist/w1.parquet",
        "custom/dataset=mnist/w1.parquet",
    ]
    back = schemas.read_table(tmp_path, "custom", schema=schema, partition_cols=["dataset"])
    assert list(back.columns) == ["dataset", "method", "value"] and len(back) == 3
    assert back.sort_values("value")["dataset"].tolist() == ["mnist", "mnist", "fashion-mnist"]
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError, match="missing \\['value'\\]"):
        schemas.write_table(df.drop(columns="value"), tmp_path, "custom", ["dataset"], schema=schema)
    assert schemas.read_table(tmp_path, "trials").columns.tolist() == schemas.TRIALS.names  # nothing yet: empty, typed


def test_pareto_mask():
    acc = [0.9, 0.8, 0.95, 0.7, float("nan"), 0.9]
    morf = [0.5, 0.6, 0.4, 0.3, 0.9, 0.5]
    assert front_mask(acc, morf).tolist() == [True, True, True, False, False, True]
