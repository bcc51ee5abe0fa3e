"""A result file that cannot be read (a truncated write) is not a finished task: the stage says so in one
line and computes it again. Real local Ray (2 CPUs), really trained models, real Parquet truncated on disk."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from evaluation import stage
from tests.evaluation.stage_fixtures import make_selected, small_settings


@pytest.mark.ray
def test_a_truncated_evaluation_file_is_computed_again_with_one_line(tmp_path, mnist, ray_local):
    out = tmp_path / "study"
    selected = make_selected(out, mnist)
    s = small_settings(metrics=["complexity"], n_samples=6, chunk_size=6)
    s = replace(s, evaluation=replace(s.evaluation, metrics=["complexity"]))
    stage.run_stage(selected, s, out, log=lambda _m: None)
    rows = len(pd.read_parquet(out / "evaluation"))
    victim = sorted((out / "evaluation").rglob("*.parquet"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a write cut short: no footer

    logs: list[str] = []
    stats = stage.run_stage(selected, s, out, log=logs.append)
    assert stats["submitted"] == 1, logs
    said = [line for line in logs if str(victim) in line]
    assert len(said) == 1 and "not a readable Parquet file" in said[0] and "computing it again" in said[0], logs
    assert len(pd.read_parquet(out / "evaluation")) == rows
