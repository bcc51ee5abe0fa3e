"""The report's per-epoch penalty values: the analysis view keeps the selected models' trials, in long form,
and the section draws one panel per penalty measured (or a note for a study without the columns)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from foundations import schemas as R
from study import penalty_curves
from study.document import Doc, Figures, render_md


def _study(with_values: bool = True) -> SimpleNamespace:
    rows = []
    for trial, pen in (("a", "none"), ("b", "smoothness"), ("c", "smoothness")):
        for epoch in (1, 2, 3):
            r = {c: np.nan for c in R.EPOCHS.names}
            r.update(study="s", dataset="mnist", penalty=pen, trial_id=trial, epoch=epoch)
            if with_values:
                r.update({c: (i + 1) / epoch for i, c in enumerate(penalty_curves.COLUMNS)})
            rows.append(r)
    selected = pd.DataFrame({"dataset": ["mnist", "mnist"], "penalty": ["none", "smoothness"],
                             "trial_id": ["a", "b"], "seed": [0, 0]})
    return SimpleNamespace(epochs=pd.DataFrame(rows), selected=selected, datasets=["mnist"],
                           penalties=["none", "smoothness"])


def test_values_per_epoch_is_long_and_keeps_the_selected_trials():
    v = penalty_curves.values_per_epoch(_study())
    assert set(v["trial_id"]) == {"a", "b"}  # c was not selected
    assert len(v) == 2 * 3 * 6
    got = v[(v["trial_id"] == "b") & (v["measured"] == "smoothness") & (v["epoch"] == 2)]["value"].item()
    assert got == 3 / 2  # val_smoothness is the third column: (2 + 1) / epoch
    assert set(penalty_curves.values_per_epoch(_study(), selected_only=False)["trial_id"]) == {"a", "b", "c"}


def test_section_draws_a_panel_per_penalty_or_says_why_not(tmp_path):
    doc, figs = Doc(), Figures(tmp_path, lambda m: None)
    penalty_curves.section(doc, _study(), figs)
    assert [p.name for p in figs.made] == ["penalty_values_mnist.png"]
    assert figs.made[0].stat().st_size > 1000
    doc2 = Doc()
    penalty_curves.section(doc2, _study(with_values=False), Figures(tmp_path, lambda m: None))
    assert "no `val_<penalty>` columns" in render_md(doc2, "t", tmp_path)
