"""The three forms of a search-space value (fixed, log-uniform range, grid), the trials they make, and
the replicate selection of a fixed-λ search. Unit tests: no Ray."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from foundations import schemas
from study import search, selection
from study.config import ConfigError, Space, load_config


@pytest.mark.parametrize("value, kind", [
    ("0.1", "fixed"), ("[0.01, 1]", "range"), ("{grid: [0.01, 0.1, 1]}", "grid"), ("1e-3", "fixed"),
])
def test_three_forms_of_lam_and_lr_are_accepted(value, kind):
    cfg = load_config("quick", [f"space.gradient.lam={value}", f"space.default.lr={value}"])
    assert Space.kind(cfg.space_for("gradient").lam) == kind
    assert Space.kind(cfg.space_for("gradient").lr) == kind  # inherited from default
    assert Space.kind(cfg.space_for("none").lr) == kind


@pytest.mark.parametrize("value, words", [
    ("{grid: []}", "space.gradient.lam.grid: must be a non-empty list"),
    ("-0.1", "space.gradient.lam: values must be finite and > 0"),
    ("{grid: [0.1, abc]}", "space.gradient.lam.grid: expected a number (fixed"),
    ("{grid: [0.1], range: [0.01, 1]}", "space.gradient.lam: a mapping must be {grid: [v1, v2, ...]}"),
    ("[0.1]", "space.gradient.lam: expected [low, high]"),
    ("[1, 0.1]", "low must be < high"),
    ("{grid: [0.1, 0.1]}", "duplicate values"),
    ("null", "space.gradient.lam: expected a number (fixed: every trial uses it), [low, high]"),
])
def test_bad_forms_name_the_key_and_the_three_forms(value, words):
    with pytest.raises(ConfigError) as e:
        load_config("quick", [f"space.gradient.lam={value}"])
    assert words in str(e.value)


def _trials(space: search.OptunaSpace, n: int) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), directions=["maximize"] * 2)
    out = []
    for _ in range(n):
        t = st.ask()
        out.append({**space(t), **t.params})
    return out


def test_fixed_lam_gives_every_trial_the_same_lam_and_its_own_seed():
    cfg = load_config("replicate", ["trials=3"])
    sp = cfg.space_for("gradient")
    got = _trials(search.OptunaSpace(sp.lam, sp.lr, cfg.seed), cfg.n_trials("gradient"))
    assert [t["lam"] for t in got] == [0.1, 0.1, 0.1]
    assert [t["seed"] for t in got] == [0, 1, 2]
    assert cfg.replicated("gradient") and cfg.replicated("none")


def test_grid_crosses_values_with_seeds():
    cfg = load_config(
        "quick", ["trials=2", "space.gradient.lam={grid: [0.01, 0.1, 1]}", "space.gradient.lr={grid: [1e-3, 1e-2]}"]
    )
    assert cfg.n_trials("gradient") == 2 * 3 * 2 and cfg.n_trials("none") == 2  # its own space: no grid
    assert (
        load_config("quick", ["space.default.lam={grid: [0.1, 1]}"]).n_trials("none") == 2
    )  # λ never gridded for none
    sp = cfg.space_for("gradient")
    got = _trials(search.OptunaSpace(sp.lam, sp.lr, 10), cfg.n_trials("gradient"))
    combos = {(t["lam"], t["lr"], t["seed"]) for t in got}
    assert combos == {(lam, lr, seed) for lam in (0.01, 0.1, 1.0) for lr in (1e-3, 1e-2) for seed in (10, 11)}
    assert not cfg.replicated("gradient")


def test_range_is_still_searched_by_optuna():
    cfg = load_config("quick")
    sp = cfg.space_for("gradient")
    got = _trials(search.OptunaSpace(sp.lam, sp.lr, 0), 4)
    assert len({t["lam"] for t in got}) == 4 and all(0.01 <= t["lam"] <= 1 for t in got)
    assert [t["seed"] for t in got] == [0, 1, 2, 3]


def _fake_trials(cfg, penalties, accs) -> pd.DataFrame:
    rows = []
    for p in penalties:
        for k, acc in enumerate(accs):
            rows.append(
                {
                    "study": cfg.name,
                    "dataset": "mnist",
                    "penalty": p,
                    "trial_id": f"{p[:3]}{k}",
                    "status": "ok",
                    "model": "cnn3b",
                    "lam": 0.1,
                    "lr": 1e-3,
                    "seed": k,
                    "val_acc": acc,
                    "val_morf": 0.5 + 0.01 * k,
                    "on_pareto_front": False,
                    "git_commit": "x",
                }
            )
    return pd.DataFrame(rows).reindex(columns=schemas.TRIALS.names)


def test_fixed_lam_selects_every_seed_and_a_range_selects_one():
    rep = load_config("replicate", ["penalties=[none, gradient]"])
    t = _fake_trials(rep, ["none", "gradient"], [0.97, 0.975, 0.98])
    sel = selection.select(rep, t, export=False)
    assert sorted(sel.groupby("penalty").size().to_dict().items()) == [("gradient", 3), ("none", 3)]
    assert sorted(sel["seed"]) == [0, 0, 1, 1, 2, 2]
    rng = load_config("quick", ["penalties=[none, gradient]", "datasets=[mnist]"])
    sel1 = selection.select(rng, t.assign(study=rng.name), export=False)
    assert len(sel1) == 2 and np.isfinite(sel1["baseline_val_acc"]).all()
