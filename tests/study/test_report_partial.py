"""Reports on partial studies: a folder with only its config, a study killed before its `none` search finished,
and a complete study searched without the `none` baseline all get a report (what is missing said in notes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from study.report import build_report, main


def _copy(tiny_study: Path, dst: Path, keep) -> Path:
    """``tiny_study``'s files for which ``keep(relative path)`` is true, copied to ``dst``."""
    for f in tiny_study.rglob("*"):
        rel = f.relative_to(tiny_study)
        if f.is_file() and rel.parts[0] != "report" and keep(rel):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)
    return dst


def _report(folder: Path, capsys) -> str:
    rc = main([str(folder), "--format", "md", "-q", "--images", "0"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return (folder / "report" / "report.md").read_text()


def test_a_folder_with_only_its_config_gets_the_partial_report(tiny_study, tmp_path, capsys):
    """Nothing searched yet: every table is missing, none of the config's penalties is in a table."""
    folder = _copy(tiny_study, tmp_path / "s", lambda rel: rel.name == "config.yaml")
    text = _report(folder, capsys)
    assert "`trials` is missing" in text and "`selected` is missing" in text, text[:3000]


def test_a_study_killed_before_its_baseline_finished_gets_the_partial_report(tiny_study, tmp_path, capsys):
    """The gradient search finished, the `none` one did not: trials of gradient only, nothing selected."""
    folder = _copy(tiny_study, tmp_path / "s", lambda rel: rel.name == "config.yaml" or (
        rel.parts[0] in ("trials", "epochs") and "penalty=gradient" in rel.parts))
    text = _report(folder, capsys)
    assert "`selected` is missing" in text, text[:3000]
    assert "gradient" in text


def test_a_complete_study_without_the_baseline_gets_its_report_without_comparisons(tiny_study, tmp_path, capsys):
    """`penalties=[gradient]`: trained, selected and evaluated; the report says once that nothing is compared."""
    folder = _copy(tiny_study, tmp_path / "s", lambda rel: "penalty=none" not in rel.parts)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["penalties"] = ["gradient"]
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    for part in (folder / "selected").rglob("*.parquet"):
        sel = pd.read_parquet(part)
        sel[sel["penalty"] != "none"].to_parquet(part, index=False)
    text = _report(folder, capsys)
    assert text.lower().count("no `none` baseline") == 1, text
    assert "Δ = penalty" not in text  # no comparison table
    assert "gradient" in text and "`evaluation` is missing" not in text


def test_a_baseline_that_is_not_a_penalty_of_the_study_is_still_refused(tiny_study, tmp_path):
    with pytest.raises(ValueError, match="baseline: 'symmetry' is not a penalty of this study; valid choices: none, "
                                         "gradient"):
        build_report(tiny_study, "md", out_dir=tmp_path / "r", baseline="symmetry")
