"""The original study beside this one: each original number against this study's seeds, computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study import original
from study.analysis import Study

SEEDS = (0, 1, 2)
PENALTIES = ("none", "gradient", "symmetry")


def _study() -> tuple[Study, dict]:
    """Three seeds per penalty; per model two images of MoRF (score rows and one curve row that must be ignored),
    full-test accuracy, and MoRF with the symmetry model's maps; returns the study and the per-model values."""
    sel, ev, cross, truth = [], [], [], {}
    for k, p in enumerate(PENALTIES):
        for s in SEEDS:
            tid, mid = f"t{k}{s}", f"{p}-t{k}{s}"
            sel.append({"study": "x", "dataset": "mnist", "penalty": p, "trial_id": tid, "model": "cnn3b",
                        "seed": s, "weights_path": f"models/{mid}.pt", "lam": 0.1, "lr": 1e-3, "val_acc": 0.9,
                        "val_morf": 0.5, "baseline_val_acc": 0.9, "tolerance": 0.01, "within_tolerance": True,
                        "has_baseline": True, "on_pareto_front": True, "on_dataset_pareto_front": True,
                        "n_trials": 3, "n_failed": 0, "config_path": "", "git_commit": ""})
            morf = (0.5 + 0.1 * k + 0.01 * s, 0.6 + 0.1 * k + 0.03 * s)  # two images
            acc = [1.0] * (9 - s) + [0.0] * (1 + s)  # ten test images
            crossv = (0.7 + 0.02 * k, 0.8 - 0.01 * s)
            truth[(p, s)] = {"morf_auc": np.mean(morf), "test_accuracy": np.mean(acc),
                             "morf_auc_with_symmetry_maps": np.mean(crossv)}
            common = {"study": "x", "dataset": "mnist", "penalty": p, "model_id": mid, "seed": 0, "chunk": 0,
                      "node_id": ""}
            ev += [{**common, "method": "saliency", "metric": "morf", "level": np.nan, "sample": i, "value": v}
                   for i, v in enumerate(morf)]
            ev.append({**common, "method": "saliency", "metric": "morf_curve", "level": 0.5, "sample": 0, "value": 9})
            ev += [{**common, "method": "", "metric": "full_test_accuracy", "level": np.nan, "sample": i, "value": v}
                   for i, v in enumerate(acc)]
            if p != "symmetry":
                cross += [{**common, "method": "saliency", "metric": "morf", "level": np.nan, "sample": i, "value": v,
                           "map_model": f"symmetry-t2{s}"} for i, v in enumerate(crossv)]
    s = Study.from_frames(selected=pd.DataFrame(sel), evaluation=pd.DataFrame(ev))
    s.cross_maps = pd.DataFrame(cross)
    for seed in SEEDS:  # the symmetry model with its own maps is the matrix's diagonal
        truth[("symmetry", seed)]["morf_auc_with_symmetry_maps"] = truth[("symmetry", seed)]["morf_auc"]
    return s, truth


def test_each_original_number_beside_our_seeds_by_hand():
    s, truth = _study()
    ref = pd.DataFrame([{"dataset": "mnist", "penalty": p, "metric": m, "value": 0.5 + 0.2 * k, "source": "x"}
                        for k, p in enumerate(PENALTIES)
                        for m in ("morf_auc", "test_accuracy", "morf_auc_with_symmetry_maps")])
    t = original.beside(s, ref)
    assert len(t) == len(ref)
    for _, r in t.iterrows():
        v = np.array([truth[(r["penalty"], seed)][r["metric"]] for seed in SEEDS])
        half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
        assert r["n"] == 3 and r["mean"] == pytest.approx(v.mean())
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((v.mean() - half, v.mean() + half))
        assert r["inside"] == (v.mean() - half <= r["original"] <= v.mean() + half)
        assert r["nearest_seed"] == SEEDS[int(np.argmin(np.abs(v - r["original"])))]
    o = original.orderings(t)
    morf = t[t["metric"] == "morf_auc"]
    row = o[o["metric"] == "morf_auc"].iloc[0]
    assert row["tau"] == pytest.approx(stats.kendalltau(morf["original"], morf["mean"])[0]) and row["tau"] == 1.0
    assert row["n_penalties"] == 3


def test_a_metric_this_study_lacks_is_nan_and_an_unknown_one_is_refused(tmp_path):
    s, _ = _study()
    ref = pd.DataFrame([{"dataset": "mnist", "penalty": "none", "metric": "roar_auc", "value": 0.8, "source": "x"}])
    r = original.beside(s, ref).iloc[0]
    assert r["n"] == 0 and np.isnan(r["mean"]) and r["inside"] is None
    bad = tmp_path / "ref.csv"
    ref.assign(metric="roar_area").to_csv(bad, index=False)
    with pytest.raises(ValueError, match="roar_area.*known: test_accuracy"):
        original.load_reference(bad)


def test_the_committed_reference_names_only_known_metrics():
    ref = original.load_reference()
    assert set(ref["metric"]) == set(original.CONVENTIONS) and len(ref) == 7 * len(original.CONVENTIONS)


def test_the_cross_map_matrix_by_hand():
    """Rows: the scored penalty; columns: own maps, the symmetry model's maps (its own on the diagonal)."""
    from study import replicates

    s, truth = _study()
    m = replicates.cross_map_matrix(s).set_index("penalty")
    assert list(m.columns) == ["dataset", "own", "symmetry"]
    for p in PENALTIES:
        own = np.mean([truth[(p, seed)]["morf_auc"] for seed in SEEDS])
        sym = np.mean([truth[(p, seed)]["morf_auc_with_symmetry_maps"] for seed in SEEDS])
        assert m.loc[p, "own"] == pytest.approx(own) and m.loc[p, "symmetry"] == pytest.approx(sym)
    assert m.loc["symmetry", "symmetry"] == m.loc["symmetry", "own"]
