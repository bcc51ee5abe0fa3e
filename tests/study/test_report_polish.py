"""The report as a new user reads it: what is marked best, how numbers read, what is flagged."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study import document, report
from foundations import schemas
from tests.study.test_report import copy_study

REPO = Path(__file__).resolve().parents[2]


def test_equal_values_mark_no_row_best():
    assert document.best_flags([0.95, 0.95, 0.95], True) == [False, False, False]
    assert document.best_flags([0.95, 0.95, 0.5], True) == [True, True, False]  # a real tie at the top still shows
    assert document.best_flags([0.2, 0.4], False) == [True, False]


def test_percentages_read_with_one_decimal():
    assert document.fmt_ci(0.975, 0.95, 0.99, 100) == "97.5 [95.0, 99.0]"
    assert document.fmt_pct(0.8835) == "88.3" and document.fmt_pct(float("nan")) == "–"


def test_fashion_gallery_names_the_classes():
    assert report.class_name("fashion-mnist", 0) == "T-shirt/top"
    assert report.class_name("fashion-mnist", 9) == "Ankle boot"
    assert report.class_name("mnist", 3) == "digit 3"


@pytest.fixture(scope="module")
def flagged_study(tiny_study, tmp_path_factory):
    """The tiny study with its `gradient` model marked as selected outside the tolerance, data_root unset."""
    d = copy_study(tiny_study, tmp_path_factory.mktemp("flag") / "study")
    sel = schemas.read_table(d, "selected")
    sel.loc[sel["penalty"] == "gradient", "within_tolerance"] = False
    schemas.write_table(sel, d, "selected", key=sel["study"].iloc[0])
    conf = yaml.safe_load((d / "config.yaml").read_text())
    conf["data_root"] = ""
    (d / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return d


@pytest.fixture(scope="module")
def flagged_report(flagged_study):
    return report.build_report(flagged_study, n_images=3)


def test_outside_tolerance_is_flagged(flagged_report):
    md = flagged_report.with_suffix(".md").read_text()
    assert "| gradient † |" in md, md[:3000]
    assert "† selected outside the tolerance" in md


def test_headings_render_code_and_significant_comparisons_come_first(flagged_report):
    html = flagged_report.read_text()
    assert not re.search(r"<h[23][^>]*>[^<]*`", html), "literal backticks in a heading"
    assert '<h2 id="compare">Penalties versus the <code>none</code> baseline</h2>' in html
    section = html.split('<h2 id="compare">', 1)[1].split("<h2", 1)[0]
    n_sig, n_all = map(int, re.search(r"(\d+) of (\d+) comparisons are significant", section).groups())
    assert n_sig < n_all and "<details>" in section, section[:2000]  # the tiny study has non-significant ones
    before = section.split("<details>", 1)[0]
    assert (n_sig == 0) or "significant comparisons" in before, before


def test_percent_cells_have_one_decimal(flagged_report):
    md = flagged_report.with_suffix(".md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| none") or ln.startswith("| gradient")]
    assert rows
    for ln in rows[:2]:  # the selected-models table: val. acc. (%) is the 3rd column
        cell = ln.split("|")[3].strip().strip("*").replace(" ★", "").strip("*")
        assert re.fullmatch(r"\d{1,3}\.\d", cell), ln


def test_a_report_built_elsewhere_keeps_its_gallery(flagged_study, tmp_path, monkeypatch):
    """A report built from another directory lost its gallery (the maps were recomputed from
    the data, looked up relative to the current directory). The maps now travel in the `gallery` table:
    no data, weights or torch needed; without that table the note names the command that writes it."""
    import shutil

    study = copy_study(flagged_study, tmp_path / "study")
    monkeypatch.delenv("SALIENCY_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data here
    md = report.build_report(study, formats=("md",), out_dir=tmp_path / "rep", n_images=2).read_text()
    assert "No gallery" not in md and (tmp_path / "rep" / "img" / "gallery_mnist_saliency.png").is_file()
    shutil.rmtree(study / "gallery")  # the evaluation stage's stored maps, where it writes them
    md = report.build_report(study, formats=("md",), out_dir=tmp_path / "rep2", n_images=2).read_text()
    note = next(ln for ln in md.splitlines() if "No gallery for mnist" in ln)
    assert f"--output {study} --resume --stage evaluate" in note, note


def test_search_config_records_the_absolute_data_root(tmp_path, data_root, monkeypatch):
    from study.config import load_config
    from study.search import check_output

    monkeypatch.setenv("SALIENCY_DATA_ROOT", str(data_root))
    check_output(load_config("quick", [f"output={tmp_path / 's'}"]))
    saved = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert saved["data_root"] == str(Path(data_root).absolute())


def test_bad_cli_values_are_refused(flagged_study):
    for args, message in ((["--baseline", "bogus"], "error: baseline: 'bogus' is not a penalty of this study; "
                                                    "valid choices: none, gradient"),
                          (["--images", "-1"], "argument --images: must be an integer >= 0, got '-1'")):
        r = subprocess.run([sys.executable, "-m", "study.report", str(flagged_study), *args], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_quiet_report_stage_prints_only_its_path(flagged_study, capsys):
    from study.config import config_from_raw

    cfg = config_from_raw(yaml.safe_load((flagged_study / "config.yaml").read_text()))
    cfg.output = str(flagged_study)
    report.run(cfg, None, quiet=True)
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(out) == 1 and out[0].startswith("[report] ") and out[0].endswith("report.html"), out


def _quick_row(text: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith("| `quick`"))


def test_docs_describe_quick_and_the_smoke_test_once_and_as_they_are():
    """The presets table and the commands live in one page (docs/usage.md), not in two that can disagree;
    its `quick` row matches configs/quick.yaml, and `--smoke-test` is not "seconds"."""
    pages = {p.name: p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
    assert [n for n, text in pages.items() if any(ln.startswith("| `quick`") for ln in text.splitlines())] == [
        "usage.md"]
    usage = pages["usage.md"]
    quick = yaml.safe_load((REPO / "configs" / "quick.yaml").read_text())
    row = _quick_row(usage)
    assert f"{quick['training']['data_fraction'] * 100:g} %" in row and f"{quick['search']['explain_n']}" in row, row
    assert "cnn3b on both datasets" in row and quick["per_dataset"]["fashion-mnist"] == {"model": "cnn3b"}
    lines = [ln for text in pages.values() for ln in text.splitlines()]
    smoke = [ln for ln in lines if "--smoke-test " in ln and ln.startswith("python")]
    assert len(smoke) == 1 and "seconds" not in smoke[0] and "min" in smoke[0], smoke
    assert "25×" not in usage


def test_gitignore_covers_data_and_outputs_as_symlinks(tmp_path):
    """`/data/` matched only a folder; `data` as a symlink to a shared copy showed up as untracked."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text((REPO / ".gitignore").read_text())
    for name in ("data", "outputs"):
        (tmp_path / name).symlink_to(tmp_path.parent)
        r = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "-q", name])
        assert r.returncode == 0, f"{name} (a symlink) is not ignored"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "data").write_text("x")  # only the top-level ones
    assert subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "-q", "docs/data"]).returncode == 1
