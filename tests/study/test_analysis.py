"""study.analysis on a small real study (tests/study/report_fixture.py): tables, statistics, errors.

Expected row counts and values are recomputed from the raw tables, never written as literals.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from study import analysis
from foundations import statistics
from study import loading

SEARCH_ONLY = ("trials", "epochs", "selected", "config.yaml", "models")


@pytest.fixture(scope="module")
def study(tiny_study) -> analysis.Study:
    return analysis.load(tiny_study)


def copy_study(src, dst, keep=None):
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if keep is not None and item.name not in keep:
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst / item.name)
    return dst


def with_evaluation(s: analysis.Study, evaluation: pd.DataFrame) -> analysis.Study:
    return analysis.Study.from_frames(path=s.path, config=s.config, trials=s.trials, epochs=s.epochs,
                                      selected=s.selected, evaluation=evaluation, roar=s.roar, curves=s.curves)


def scalar_rows(s: analysis.Study) -> pd.DataFrame:
    e = s.evaluation
    return e[e["level"].isna() & (e["sample"] >= 0)]


# --------------------------------------------------------------------------- loading
def test_load_reads_every_table_typed(study, tiny_study):
    assert study.missing == []
    for name in loading.TABLES:
        df = getattr(study, name)
        schema = loading.table_schema(name)
        assert len(df) > 0, name
        assert list(df.columns[: len(schema.names)]) == schema.names, name
        # the same rows as a plain pandas read of the Hive-partitioned folder
        assert len(df) == len(pd.read_parquet(tiny_study / name)), name
    assert study.evaluation["sample"].dtype == np.int64
    assert study.evaluation["value"].dtype == np.float64
    assert study.trials["lam"].dtype == np.float64
    assert set(study.evaluation["penalty"]) == set(study.selected["penalty"])  # partition columns restored
    assert study.name == "tiny" and study.datasets == ["mnist"] and study.penalties == ["none", "gradient"]
    assert study.config["name"] == "tiny" and "datasets:" in study.config_text


def test_load_accepts_a_file_uri(study, tiny_study):
    s = analysis.load(f"file://{tiny_study}")
    for name in loading.TABLES:
        assert len(getattr(s, name)) == len(getattr(study, name))


def test_writer_temporary_files_are_ignored(tiny_study, tmp_path):
    d = copy_study(tiny_study, tmp_path / "s", keep=SEARCH_ONLY)
    n = len(pd.read_parquet(d / "trials"))
    part = next((d / "trials").rglob("*.parquet"))
    (part.parent / ".tiny.123.tmp").write_bytes(b"half-written")
    shutil.copy2(part, part.parent / ".hidden.parquet")
    assert len(analysis.load(d).trials) == n


def test_partial_study_lists_missing_tables(study, tiny_study, tmp_path):
    d = copy_study(tiny_study, tmp_path / "search-only", keep=SEARCH_ONLY)
    s = analysis.load(d)
    assert s.missing == ["evaluation", "roar", "curves"]
    for name in s.missing:
        df = getattr(s, name)
        assert df.empty and list(df.columns) == loading.table_schema(name).names
    assert any("evaluation" in n for n in s.notes())
    assert s.summary().empty and list(s.summary().columns) == analysis.SUMMARY_COLUMNS
    assert s.compare().empty and list(s.compare().columns) == analysis.COMPARE_COLUMNS
    assert analysis.curve(s, "roar").empty and analysis.curve(s, "morf").empty
    assert len(s.pareto()) == len(study.pareto())  # the search views work without evaluation
    assert len(s.lambda_sweep()) == len(study.lambda_sweep())


def test_config_only_study_is_empty_not_an_error(tiny_study, tmp_path):
    d = copy_study(tiny_study, tmp_path / "just-started", keep=("config.yaml",))
    s = analysis.load(d)
    assert s.missing == list(loading.TABLES)
    assert s.pareto().empty and s.lambda_sweep().empty and s.summary().empty


def test_a_corrupt_saved_config_is_one_error_naming_the_file(tmp_path):
    """The launcher and the analysis read a study's config.yaml with one parser: invalid YAML
    or a file that is not a mapping names the file, as a StudyError here and a ConfigError in the launcher."""
    from study.config import ConfigError, read_saved

    for text, why in (("trials: [1, 2\n", "invalid YAML"), ("- 1\n- 2\n", "expected a mapping")):
        (tmp_path / "config.yaml").write_text(text)
        with pytest.raises(loading.StudyError, match=why) as e:
            analysis.load(tmp_path)
        assert str(tmp_path / "config.yaml") in str(e.value)
        want = f"^output: .*config.yaml: .*{why}.*; restore it, or use another --output"
        with pytest.raises(ConfigError, match=want):
            read_saved(str(tmp_path))


def test_not_a_study_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(loading.NotAStudyError, match=r"not a study folder") as e:
        analysis.load(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such study folder") as e:
        analysis.load(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(loading.NotAStudyError, match="it is a file"):
        analysis.load(tmp_path / "file.txt")


def test_table_missing_a_column_is_a_clear_error(tiny_study, tmp_path):
    d = copy_study(tiny_study, tmp_path / "s", keep=SEARCH_ONLY)
    f = next((d / "trials").rglob("*.parquet"))
    pq.write_table(pq.read_table(f).drop_columns(["val_acc"]), f)
    with pytest.raises(loading.SchemaError, match=r"missing required column\(s\) \['val_acc'\]") as e:
        analysis.load(d)
    assert str(f) in str(e.value)


def test_table_with_a_wrong_type_is_a_clear_error(tiny_study, tmp_path):
    d = copy_study(tiny_study, tmp_path / "s")
    f = next((d / "evaluation").rglob("*.parquet"))
    t = pq.read_table(f)
    i = t.column_names.index("value")
    pq.write_table(t.set_column(i, "value", pa.array([str(v) for v in t.column("value").to_pylist()])), f)
    with pytest.raises(loading.SchemaError, match=r"column 'value' has type string, expected double") as e:
        analysis.load(d)
    assert str(f) in str(e.value)


def test_unreadable_file_is_a_clear_error(tiny_study, tmp_path):
    d = copy_study(tiny_study, tmp_path / "s", keep=SEARCH_ONLY)
    f = next((d / "epochs").rglob("*.parquet"))
    f.write_bytes(b"not parquet")
    with pytest.raises(loading.SchemaError, match="not a readable Parquet file") as e:
        analysis.load(d)
    assert str(f) in str(e.value)


# --------------------------------------------------------------------------- directions
def test_directions_come_from_the_metric_modules():
    from evaluation import evaluate
    from evaluation.metrics import complexity, gaussian, morf

    assert analysis.higher_is_better(morf.NAME) is morf.HIGHER_IS_BETTER
    assert analysis.higher_is_better(complexity.NAME) is complexity.HIGHER_IS_BETTER
    for k, v in gaussian.OUTPUTS.items():
        assert analysis.higher_is_better(k) is v
    for k, v in evaluate.HIGHER_IS_BETTER.items():
        assert analysis.higher_is_better(k) is v
    assert analysis.higher_is_better("roar") is False
    assert analysis.higher_is_better("no_such_metric") is None


# --------------------------------------------------------------------------- summary
def test_summary_rows_columns_and_means(study):
    summ = study.summary()
    assert list(summ.columns) == analysis.SUMMARY_COLUMNS
    raw = scalar_rows(study)
    raw = raw[~raw["metric"].isin(analysis.ACCURACY_METRICS)]
    keys = ["dataset", "penalty", "model_id", "method", "metric"]
    expected = raw.groupby(keys)["value"].agg(["mean", "size"])
    # two ROAR areas (without and with the clean point, docs/spec.md §5) per scored group; the clean retrains
    # (method "") are every curve's first point, not scored themselves
    roar_groups = study.roar[study.roar["method"] != ""].groupby(["dataset", "penalty", "model_id", "method"]).ngroups
    assert len(summ) == len(expected) + 2 * roar_groups
    ev = summ[~summ["metric"].isin(["roar", "roar_clean"])].set_index(keys)
    assert np.allclose(ev.loc[expected.index, "mean"], expected["mean"])
    assert (ev.loc[expected.index, "n"] == expected["size"]).all()
    assert (ev["ci_over"] == "samples").all()
    # ROAR: one area per repeat, the interval is over repeats
    ro = summ[summ["metric"] == "roar"]
    assert (ro["ci_over"] == "repeats").all()
    assert (ro["n"] == study.roar["repeat"].nunique()).all()
    areas = analysis.roar_scores(study)
    assert np.allclose(ro.set_index(["model_id", "method"])["mean"].sort_index(),
                       areas.groupby(["model_id", "method"])["value"].mean().sort_index())
    # directions, and the selected model's λ / validation scores
    assert set(summ.loc[summ["metric"] == "complexity", "higher_is_better"]) == {False}
    assert set(summ.loc[summ["metric"] == "morf", "higher_is_better"]) == {True}
    sel = study.selected.set_index("penalty")
    for p, g in summ.groupby("penalty"):
        assert np.allclose(g["val_acc"], sel.loc[p, "val_acc"])
    # test accuracy: the mean of the per-sample accuracy rows of the model
    acc = study.evaluation[study.evaluation["metric"] == "accuracy"].groupby("model_id")["value"].mean()
    for mid, g in summ.groupby("model_id"):
        assert np.allclose(g["test_acc"], acc[mid])
        assert (g["test_acc_ci_low"] <= g["test_acc"]).all() and (g["test_acc"] <= g["test_acc_ci_high"]).all()


def test_summary_intervals_contain_the_mean(study):
    summ = study.summary()
    ci = summ[summ["n"] >= 2]
    assert len(ci) > 0
    assert (ci["ci_low"] <= ci["mean"] + 1e-12).all() and (ci["mean"] <= ci["ci_high"] + 1e-12).all()
    assert (ci["ci_low"] < ci["ci_high"]).any()


def test_summary_is_seeded(study):
    a, b = study.summary(seed=3), study.summary(seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_summary_with_levels_adds_one_row_per_level(study):
    ev = study.evaluation
    e = ev[(ev["sample"] >= 0) & ~ev["metric"].isin(analysis.ACCURACY_METRICS)]
    n_groups = e.groupby(["dataset", "penalty", "model_id", "method", "metric", "level"], dropna=False).ngroups
    roar_groups = study.roar[study.roar["method"] != ""].groupby(["dataset", "penalty", "model_id", "method"]).ngroups
    assert len(study.summary(levels=True)) == n_groups + 2 * roar_groups  # roar and roar_clean


def test_bootstrap_interval_narrows_with_more_samples(study):
    # synthetic: 20 vs 2000 normal values
    rng = np.random.default_rng(0)
    v = rng.normal(size=2000)
    lo, hi = statistics.bootstrap_ci(v[:20], seed=1)
    lo2, hi2 = statistics.bootstrap_ci(v, seed=1)
    assert lo <= v[:20].mean() <= hi and lo2 <= v.mean() <= hi2
    assert (hi2 - lo2) < 0.5 * (hi - lo)
    # real: the study's per-sample values, first 10 test images versus all of them
    e = study.evaluation
    first = np.sort(e.loc[e["sample"] >= 0, "sample"].unique())[:10]
    few = with_evaluation(study, e[e["sample"].isin(first)]).summary()
    full = study.summary()
    keys = ["dataset", "penalty", "model_id", "method", "metric"]
    m = full.merge(few, on=keys, suffixes=("", "_few"))
    m = m[(m["ci_over"] == "samples") & (m["ci_high_few"] > m["ci_low_few"])]
    assert len(m) > 0 and (m["n"] > m["n_few"]).all()
    narrower = (m["ci_high"] - m["ci_low"]) < (m["ci_high_few"] - m["ci_low_few"])
    assert narrower.mean() >= 0.8, m[keys + ["ci_low", "ci_high", "ci_low_few", "ci_high_few"]]


def test_bootstrap_edge_cases():
    assert np.isnan(statistics.bootstrap_ci([1.0])).all()
    assert statistics.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert statistics.bootstrap_ci([1.0, np.nan, 3.0, 2.0], seed=0)[0] >= 1.0


# --------------------------------------------------------------------------- paired comparison
def expected_comparisons(s: analysis.Study, baseline="none") -> int:
    e = scalar_rows(s)
    n = 0
    for _, g in e.groupby(["dataset", "method", "metric"]):
        if (g["penalty"] == baseline).any():
            n += g[g["penalty"] != baseline].groupby(["penalty", "model_id"]).ngroups
    areas = analysis.roar_scores(s)
    for _, g in areas.groupby(["dataset", "method"]):
        if (g["penalty"] == baseline).any():
            n += 2 * g[g["penalty"] != baseline].groupby(["penalty", "model_id"]).ngroups  # roar, roar_clean
    return n


def test_compare_rows_and_values(study):
    comp = study.compare()
    assert list(comp.columns) == analysis.COMPARE_COLUMNS
    assert len(comp) == expected_comparisons(study) > 0
    assert (comp["baseline"] == "none").all() and (comp["penalty"] != "none").all()
    assert (comp["correction"] == "holm").all()
    assert (comp["p_adjusted"] >= comp["p_value"] - 1e-15).all()
    # one row recomputed by hand: morf of Saliency, paired by sample index
    e = scalar_rows(study)
    r = comp[(comp["metric"] == "morf") & (comp["method"] == "saliency")].iloc[0]
    a = e[(e["metric"] == "morf") & (e["method"] == "saliency") & (e["model_id"] == r["model_id"])]
    b = e[(e["metric"] == "morf") & (e["method"] == "saliency") & (e["model_id"] == r["baseline_model_id"])]
    m = a.merge(b, on="sample")
    d = m["value_x"] - m["value_y"]
    assert r["n"] == len(m)
    assert np.isclose(r["mean_diff"], d.mean())
    nz = d[d != 0]
    assert np.isclose(r["p_value"], stats.wilcoxon(nz).pvalue)
    assert r["diff_ci_low"] <= r["mean_diff"] <= r["diff_ci_high"]


def planted(s: analysis.Study, shift) -> pd.DataFrame:
    """The evaluation table with every `gradient` per-sample value replaced by the `none` value of
    the same (method, metric, level, sample) plus ``shift(n)``."""
    e = s.evaluation.copy()
    base = e[e["penalty"] == "none"].set_index(["method", "metric", "level", "sample"])["value"]
    g = e["penalty"] == "gradient"
    keys = pd.MultiIndex.from_frame(e.loc[g, ["method", "metric", "level", "sample"]])
    e.loc[g, "value"] = base.reindex(keys).to_numpy() + shift(int(g.sum()))
    return e


def test_compare_detects_a_planted_difference(study):
    rng = np.random.default_rng(0)
    s = with_evaluation(study, planted(study, lambda n: 0.1 + rng.normal(0, 0.03, n)))
    comp = s.compare()
    ev = comp[~comp["metric"].isin(["roar", "roar_clean"])]  # the ROAR areas come from the roar table
    assert len(ev) > 0
    assert ev["significant"].all(), ev[["method", "metric", "p_value", "p_adjusted"]]
    assert np.allclose(ev["mean_diff"], 0.1, atol=0.03)
    assert (ev["rank_biserial"] > 0.9).all() and (ev["cohens_d"] > 1).all()
    # the verdict follows each metric's direction
    for _, r in ev.iterrows():
        assert r["improved"] is analysis.higher_is_better(r["metric"])


def test_compare_does_not_detect_identical_inputs(study):
    s = with_evaluation(study, planted(study, lambda n: np.zeros(n)))
    ev = s.compare()
    ev = ev[~ev["metric"].isin(["roar", "roar_clean"])]
    assert len(ev) > 0
    assert (~ev["significant"]).all()
    assert (ev["p_value"] == 1).all() and (ev["mean_diff"] == 0).all() and (ev["rank_biserial"] == 0).all()
    assert ev["improved"].isna().all()


def test_compare_correction_choices(study):
    holm, bh = study.compare(correction="holm"), study.compare(correction="bh")
    assert np.allclose(bh["p_adjusted"], stats.false_discovery_control(holm["p_value"], method="bh"))
    assert (bh["p_adjusted"] <= holm["p_adjusted"] + 1e-12).all()
    with pytest.raises(ValueError, match="unknown correction"):
        study.compare(correction="sidak")


def test_holm_adjustment():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2 -> ×4, ×3, ×2, ×1, then running maximum
    assert np.allclose(statistics.holm(p), [0.04, 0.09, 0.09, np.nan, 0.2], equal_nan=True)


def test_paired_test_effect_sizes():
    a = np.arange(1.0, 11.0)
    assert statistics.paired_test(a + 1, a)["rank_biserial"] == 1.0
    assert statistics.paired_test(a - 1, a)["rank_biserial"] == -1.0
    same = statistics.paired_test(a, a)
    assert same["p_value"] == 1.0 and same["cohens_d"] == 0.0


# --------------------------------------------------------------------------- search views
def test_pareto_fronts(study):
    par = study.pareto()
    assert list(par.columns) == analysis.PARETO_COLUMNS
    t = study.trials
    ok = t[(t["status"] != "error") & np.isfinite(t["val_acc"]) & np.isfinite(t["val_morf"])]
    assert len(par) == len(ok)
    for _, g in par.groupby("dataset"):
        a, s = g["accuracy"].to_numpy(), g["score"].to_numpy()
        for i in range(len(g)):
            dominated = ((a >= a[i]) & (s >= s[i]) & ((a > a[i]) | (s > s[i]))).any()
            assert g["on_dataset_front"].iloc[i] == (not dominated)
        assert g["on_dataset_front"].any()
    for _, g in par.groupby(["dataset", "penalty"]):
        assert g["on_penalty_front"].any()
    assert (par.loc[par["on_dataset_front"], "on_penalty_front"]).all()
    assert par["selected"].sum() == len(study.selected)


def test_lambda_sweep(study):
    sw = study.lambda_sweep()
    assert list(sw.columns) == analysis.SWEEP_COLUMNS
    t = study.trials
    pen = t[(t["penalty"] != "none") & (t["status"] != "error")]
    assert len(sw) == int(np.isfinite(pen["val_acc"]).sum() + np.isfinite(pen["val_morf"]).sum())
    assert "none" not in set(sw["penalty"])
    for _, g in sw.groupby(["dataset", "penalty", "metric"]):
        assert g["lam"].is_monotonic_increasing
    by_id = t.set_index("trial_id")
    assert np.allclose(sw["value"], [by_id.loc[i, m] for i, m in zip(sw["trial_id"], sw["metric"])])
    with pytest.raises(ValueError, match="unknown trial metric"):
        study.lambda_sweep(metrics=["nope"])


# --------------------------------------------------------------------------- curves
def test_curves(study):
    r = analysis.curve(study, "roar")
    assert len(r) == study.roar.groupby(["dataset", "penalty", "model_id", "method", "fraction"]).ngroups
    assert "random" in set(r["method"])
    exp = study.roar.groupby(["model_id", "method", "fraction"])["accuracy"].mean()
    assert np.allclose(r.set_index(["model_id", "method", "x"])["y"].sort_index(), exp.sort_index())
    e = study.evaluation
    for kind, metric in (("morf", "morf_curve"), ("gaussian", "gaussian_accuracy"), ("square_block", "block_accuracy")):
        c = analysis.curve(study, kind)
        rows = e[(e["metric"] == metric) & (e["sample"] >= 0)]
        assert len(c) == rows.groupby(["model_id", "method", "level"]).ngroups > 0, kind
        assert np.allclose(c.set_index(["model_id", "method", "x"])["y"].sort_index(),
                           rows.groupby(["model_id", "method", "level"])["value"].mean().sort_index())
    # without per-sample rows, the curves table is used (the stage names curves after the metric)
    s = with_evaluation(study, e.iloc[:0])
    c = analysis.curve(s, "morf")
    assert len(c) == len(study.curves[study.curves["curve"] == "morf_curve"]) and (c["source"] == "curves").all()
    with pytest.raises(ValueError, match="unknown curve"):
        analysis.curve(study, "nope")


def test_every_per_sample_value_is_written_once(study):
    """The stage writes each (model, method, metric, level, sample) once, test accuracy included, so the
    analysis needs no de-duplication: a duplicate would weigh one image twice in every mean."""
    ev = study.evaluation[study.evaluation["sample"] >= 0]
    keys = ["dataset", "penalty", "model_id", "method", "metric", "level", "sample"]
    dup = ev[ev.duplicated(keys, keep=False)]
    assert dup.empty, dup.head()
    acc = ev[ev["metric"] == "accuracy"]
    assert len(acc) and (acc["method"] == "").all()
    assert acc.groupby("model_id")["sample"].nunique().eq(acc.groupby("model_id").size()).all()
