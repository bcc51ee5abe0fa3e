"""The randomisation test's section of the results page: per-level values over images and seeds, one panel
per penalty, the first and last level in the table; on a synthetic evaluation table whose answers are known."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from study import randomisation
from study.analysis import Study
from study.document import Doc, Figures, render_md

PENALTIES = ("none", "gradient")
METHODS = ("saliency", "random")
LEVELS = (1, 2, 3)


def _study() -> tuple[Study, dict]:
    rows, truth = [], {}
    rng = np.random.default_rng(0)
    for p, seed, m, metric in itertools.product(PENALTIES, (0, 1), METHODS, randomisation.METRICS):
        for k in LEVELS:
            values = np.ones(4) if m == "random" else rng.uniform(-0.2, 1.0, 4)
            truth.setdefault((p, m, metric, k), []).append(values.mean())
            rows += [{"study": "fm", "dataset": "fashion-mnist", "penalty": p, "model_id": f"{p}-t{seed}",
                      "method": m, "metric": metric, "level": float(k), "sample": i, "value": v, "seed": 0,
                      "chunk": 0, "node_id": ""} for i, v in enumerate(values)]
    rows.append({**rows[0], "metric": "morf", "level": np.nan})  # other metrics are not the test's
    s = Study.from_frames(config={"name": "fm", "penalties": list(PENALTIES)}, evaluation=pd.DataFrame(rows))
    return s, truth


def test_curves_are_the_mean_over_images_then_mean_min_max_over_seeds():
    s, truth = _study()
    c = randomisation.curves(s)
    assert len(c) == len(truth) and set(c["metric"]) == set(randomisation.METRICS)
    for (p, m, metric, k), per_seed in truth.items():
        r = c[(c["penalty"] == p) & (c["method"] == m) & (c["metric"] == metric) & (c["level"] == k)].iloc[0]
        assert np.isclose(r["mean"], np.mean(per_seed)) and np.isclose(r["min"], min(per_seed))
        assert np.isclose(r["max"], max(per_seed)) and r["n"] == 2


def test_section_draws_a_panel_per_penalty_and_tables_the_first_and_last_level(tmp_path):
    s, truth = _study()
    doc, figs = Doc(), Figures(tmp_path, lambda _m: None)
    randomisation.section(doc, s, figs)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["fashion-mnist_mprt_spearman.png",
                                                              "fashion-mnist_mprt_ssim.png"]
    text = render_md(doc, "t", tmp_path, "cmd")
    want = np.mean(truth[("gradient", "saliency", "mprt_spearman", 3)])
    assert f"{want:.3f}" in text, text  # the last level's Spearman of gradient's saliency maps
    assert "Spearman, all 3 layers" in text


def test_no_mprt_rows_no_section():
    s = Study.from_frames(config={"name": "x"})
    doc = Doc()
    assert randomisation.section(doc, s, Figures(".", lambda _m: None)).empty
    assert randomisation.curves(s).empty


def test_a_second_study_adds_its_figures_and_table_under_the_same_heading(tmp_path):
    s, _ = _study()
    doc, figs = Doc(), Figures(tmp_path, lambda _m: None)
    randomisation.section(doc, s, figs)
    randomisation.section(doc, s, figs, heading=False)
    text = render_md(doc, "t", tmp_path, "cmd")
    assert text.count("The randomisation test") == 1 and text.count("Study `fm`:") == 2
    assert text.count("Spearman, all 3 layers") == 2
