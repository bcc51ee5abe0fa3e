"""study.report on a small real study: files, references, headless-Chromium rendering, partial
studies and errors."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from study import analysis
from study import loading
from study import document, report

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SEARCH_ONLY = ("trials", "epochs", "selected", "config.yaml", "models")
FIGURES_PER_DATASET = ("morf", "roar", "gaussian", "square_block", "pareto", "lambda")  # + one gallery per method


# --------------------------------------------------------------------------- helpers
class Refs(HTMLParser):
    """Collects img src, a href and link href values."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag in ("a", "link") and a.get("href"):
            self.links.append(a["href"])
        elif tag in ("script", "iframe"):
            self.links.append(f"<{tag}>")


def refs(html_text: str) -> Refs:
    p = Refs()
    p.feed(html_text)
    return p


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_png(path: Path, min_bytes: int = 5_000) -> None:
    import matplotlib.image as mpimg

    w, h = png_size(path)
    assert 300 <= w <= 4000 and 200 <= h <= 4000, (path, w, h)
    assert min_bytes <= path.stat().st_size <= 3_000_000, (path, path.stat().st_size)
    img = mpimg.imread(path)  # decodes the whole file
    assert img.shape[:2] == (h, w)
    assert float(np.std(img[..., :3])) > 0.02, f"{path} looks blank"


def copy_study(src: Path, dst: Path, keep=None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name == "report" or (keep is not None and item.name not in keep):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst / item.name)
    return dst


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def full_report(tiny_study) -> Path:
    return report.build_report(tiny_study)


@pytest.fixture(scope="module")
def partial_report(tiny_study, tmp_path_factory) -> Path:
    """A search without evaluation, whose `gradient` weights have gone missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = copy_study(tiny_study, tmp_path_factory.mktemp("partial") / "study", keep=SEARCH_ONLY)
    for f in (d / "selected").rglob("*.parquet"):
        t = pq.read_table(f)
        paths = [str(d / "models" / "gone.pt") if p == "gradient" else w
                 for p, w in zip(t.column("penalty").to_pylist(), t.column("weights_path").to_pylist())]
        pq.write_table(t.set_column(t.column_names.index("weights_path"), "weights_path", pa.array(paths)), f)
    return report.build_report(d, n_images=3)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's headless Chromium, installed with apt-get when missing and we are root."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        r = subprocess.run(
            ["apt-get", "install", "-y", "chromium"], env=env, capture_output=True, text=True, timeout=1200
        )
        if r.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(f"apt-get install chromium failed: {r.stderr[-2000:]}")
    return CHROMIUM


def chromium_cmd(binary: Path, user_dir: Path) -> list[str]:
    return [
        str(binary),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
    ]


# --------------------------------------------------------------------------- the full report
def test_report_files(full_report, tiny_study):
    s = analysis.load(tiny_study)
    out = tiny_study / "report"
    assert full_report == out / "report.html"
    assert (out / "report.md").is_file()
    n_methods = len(s.config["evaluation"]["methods"])
    expected = {f"gallery_{d}_{m}.png" for d in s.datasets for m in s.config["evaluation"]["methods"]}
    expected |= {f"{f}_{d}.png" for d in s.datasets for f in FIGURES_PER_DATASET}
    pngs = sorted((out / "img").glob("*.png"))
    assert {p.name for p in pngs} == expected and len(pngs) == len(s.datasets) * (n_methods + len(FIGURES_PER_DATASET))
    for p in pngs:
        check_png(p)
    for name in ("summary", "compare", "pareto", "lambda_sweep"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0


def test_html_references_only_existing_files(full_report):
    text = full_report.read_text()
    r = refs(text)
    assert r.imgs and "<script>" not in r.links
    for src in r.imgs + [h for h in r.links if not h.startswith("#")]:
        assert not re.match(r"^[a-z]+://", src), f"external reference {src}"
        assert (full_report.parent / src).is_file(), f"{src} does not exist"
    anchors = set(re.findall(r'id="([^"]+)"', text))
    assert {h[1:] for h in r.links if h.startswith("#")} <= anchors
    md = (full_report.parent / "report.md").read_text()
    for src in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md) + re.findall(r"(?<!!)\[[^\]]*\]\(([^)#]+)\)", md):
        assert (full_report.parent / src).is_file(), src


def test_html_content(full_report, tiny_study):
    s = analysis.load(tiny_study)
    text = full_report.read_text()
    for anchor in ("status", "summary", "compare", "gallery", "morf", "roar", "robustness", "search", "provenance"):
        assert f'id="{anchor}"' in text
    summ = s.summary()
    # every scalar explanation metric is a column, every method a block; best values marked
    for metric in set(summ.loc[summ["method"] != "", "metric"]):
        assert document.metric_label(metric) in text
    assert text.count('class="best"') >= summ["metric"].nunique()
    assert "★" in text and "↑" in text and "↓" in text
    # the numbers come from analysis.summary
    r = summ[(summ["metric"] == "morf") & (summ["method"] == "saliency")].iloc[0]
    assert document.fmt_ci(r["mean"], r["ci_low"], r["ci_high"]) in text
    # configuration, versions, commit
    assert "name: tiny" in text and "pandas" in text
    for commit in analysis.provenance(s)["git_commits"]:
        assert commit in text
    assert "is missing" not in text  # nothing missing in the full study
    md = (full_report.parent / "report.md").read_text()
    assert "## Summary" in md and "★" in md and "```yaml" in md


def test_report_renders_in_headless_chromium(full_report, chromium, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = chromium_cmd(chromium, tmp_path / "profile") + [
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        full_report.as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert png_size(shot) == (1200, 2000)
    import matplotlib.image as mpimg

    px = mpimg.imread(shot)[..., :3]
    assert float(px.var()) > 0.005, "the screenshot is blank"
    assert (px.mean(axis=2) < 0.5).mean() > 0.005, "no dark pixels (no text rendered)"
    # every image loads and the page raises no error: a copy with a checking script, DOM dumped
    probe = full_report.parent / "_probe.html"
    probe.write_text(
        full_report.read_text().replace(
            "</body>",
            """<script>
      var errs = [];
      window.addEventListener('error', function (e) { errs.push(String(e.message || e.target.src)); }, true);
      window.addEventListener('load', function () {
        var bad = Array.from(document.images).filter(function (i) { return !i.complete || i.naturalWidth === 0; });
        document.title = 'PROBE images=' + document.images.length + ' broken=' + bad.length + ' errors=' + errs.length;
      });
    </script></body>""",
        )
    )
    try:
        r = subprocess.run(
            chromium_cmd(chromium, tmp_path / "profile2")
            + ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        probe.unlink()
    assert r.returncode == 0, r.stderr[-3000:]
    n_img = len(refs(full_report.read_text()).imgs)
    assert f"PROBE images={n_img} broken=0 errors=0" in r.stdout, re.findall(r"<title>.*?</title>", r.stdout)


def test_embedded_report_is_a_single_file(partial_report, tmp_path):
    path = report.build_report(
        partial_report.parent.parent, formats=("html",), out_dir=tmp_path / "embedded", n_images=0, embed=True
    )
    r = refs(path.read_text())
    assert r.imgs and all(src.startswith("data:image/png;base64,") for src in r.imgs)
    assert not (tmp_path / "embedded" / "report.md").exists()


# --------------------------------------------------------------------------- partial studies
def test_partial_report_says_what_is_missing(partial_report):
    text = partial_report.read_text()
    for table in ("evaluation", "roar", "curves"):
        assert f"<code>{table}</code> is missing" in text
    assert "No MoRF curves" in text and "No ROAR results" in text
    # the report reads tables only: no gallery without the evaluation stage's `gallery` table, and it says
    # how to get one (it used to recompute the maps from the weights and the data)
    note = next(ln for ln in text.splitlines() if "No gallery for mnist" in ln)
    assert "none, gradient" in note and "--resume --stage evaluate" in note, note
    names = {p.name for p in (partial_report.parent / "img").glob("*.png")}
    assert {"pareto_mnist.png", "lambda_mnist.png"} <= names
    assert not any(n.startswith("gallery_") for n in names)
    assert not any(n.startswith(("morf_", "roar_", "gaussian_", "square_block_")) for n in names)
    for p in (partial_report.parent / "img").glob("*.png"):
        check_png(p)
    r = refs(text)
    for src in r.imgs + [h for h in r.links if not h.startswith("#")]:
        assert (partial_report.parent / src).is_file(), src


def test_search_still_running_and_launch_entry_point(tiny_study, tmp_path, capsys):
    d = copy_study(tiny_study, tmp_path / "s", keep=("trials", "epochs", "config.yaml"))  # nothing selected yet
    from study.config import load_config

    path = report.run(load_config("quick", [f"output={d}"]), None)  # what study.launch calls after the search
    assert path == d / "report" / "report.html" and path.is_file()
    assert str(path) in capsys.readouterr().out
    text = path.read_text()
    assert "no model has been selected yet" in text and "pareto_mnist.png" in text
    assert {p.name for p in (d / "report" / "img").glob("*.png")} == {"pareto_mnist.png", "lambda_mnist.png"}


def test_cli(partial_report, tmp_path):
    study_dir = partial_report.parent.parent
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.report",
            str(study_dir),
            "--format",
            "md",
            "--images",
            "0",
            "--out",
            str(tmp_path / "md"),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == tmp_path / "md" / "report.md"
    assert not (tmp_path / "md" / "report.html").exists()
    (tmp_path / "empty").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "study.report", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 2 and "not a study folder" in r.stderr and str(tmp_path / "empty") in r.stderr


def test_errors_name_the_path_and_the_problem(tiny_study, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(loading.NotAStudyError, match="not a study folder"):
        report.build_report(tmp_path / "empty")
    d = copy_study(tiny_study, tmp_path / "bad", keep=SEARCH_ONLY)
    import pyarrow.parquet as pq

    f = next((d / "selected").rglob("*.parquet"))
    pq.write_table(pq.read_table(f).drop_columns(["weights_path"]), f)
    with pytest.raises(loading.SchemaError, match="weights_path") as e:
        report.build_report(d)
    assert str(f) in str(e.value)
    with pytest.raises(ValueError, match="formats"):
        report.build_report(tiny_study, formats=("pdf",))
