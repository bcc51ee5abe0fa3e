"""Replicates: a fixed-λ study evaluates every seed, the analysis aggregates over seeds with the
random control beside every metric, and the results page publishes it (Markdown + summary.csv).

One real tiny study through the launcher (MNIST, none + gradient, λ fixed, 2 seeds, 1 epoch on 1 %)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study import analysis, replicates
from study.publish import CSV_COLUMNS, build_results
from tests.ray_utils import ray_env

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def replicated(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("rep") / "study"
    sets = ["trials=2", "epochs=1", "data_fraction=0.01", "penalties=[none, gradient]", "val_limit=300",
            "evaluation.n_samples=16", "evaluation.chunk_size=16", "evaluation.roar.data_fraction=0.01",
            "evaluation.roar.epochs=1", "evaluation.roar.n_test=200", "evaluation.roar.repeats=2",
            "evaluation.roar.fractions=[0.5, 0.9]", "evaluation.metric_params={gaussian: {n_draws: 2}}",
            "evaluation.methods=[saliency, random]", "evaluation.map_models=[own, none]"]
    cmd = [sys.executable, "-m", "study.launch", "--config", "replicate", "--output", str(out), "-q", "--num-cpus", "2"]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, cwd=REPO, env=ray_env({**os.environ, "SALIENCY_DATA_ROOT": str(data_root)}),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_every_seed_is_selected_and_evaluated_with_the_random_control(replicated):
    s = analysis.load(replicated)
    assert s.selected.groupby("penalty").size().to_dict() == {"gradient": 2, "none": 2}
    assert sorted(s.selected["seed"]) == [0, 0, 1, 1]
    assert (s.selected["lam"][s.selected["penalty"] == "gradient"] == 0.1).all()
    ev = s.evaluation
    assert ev.groupby("model_id")["method"].apply(set).map(lambda m: {"saliency", "random"} <= m).all()
    assert len(ev["model_id"].unique()) == 4
    ro = s.roar
    assert set(ro.loc[ro["method"] == "", "fraction"]) == {0.0} and (ro["method"] == "random").sum() == 4  # 2 × 2


def test_replicates_aggregate_over_seeds_with_a_t_interval(replicated):
    s = analysis.load(replicated)
    rep = replicates.replicates(s)
    pm = replicates.per_model(s)
    r = rep[(rep["penalty"] == "gradient") & (rep["method"] == "saliency") & (rep["metric"] == "morf")].iloc[0]
    v = pm[(pm["penalty"] == "gradient") & (pm["method"] == "saliency") & (pm["metric"] == "morf")]["value"].to_numpy()
    assert r["n"] == 2 and np.isclose(r["mean"], v.mean())
    half = 12.706204736 * v.std(ddof=1) / np.sqrt(2)  # t(0.975, 1 df)
    assert np.isclose(r["ci_high"] - r["mean"], half, rtol=1e-6)
    # each model's value is the mean over its evaluated images
    e = s.evaluation
    one = pm[pm["metric"] == "morf"].iloc[0]  # a per-image metric
    raw = e[(e["model_id"] == one["model_id"]) & (e["method"] == one["method"]) & (e["metric"] == one["metric"])
            & e["level"].isna() & (e["sample"] >= 0)]["value"]
    assert len(raw) and np.isclose(one["value"], raw.mean())
    # the random control next to every explanation metric: its own models' random maps, ROAR's dataset control
    rnd = rep[rep["method"] == "random"].set_index(["penalty", "metric"])["mean"]
    sal = rep[rep["method"] == "saliency"]
    for _, row in sal.iterrows():
        want = rnd.get((row["penalty"], row["metric"]), rnd.get(("none", row["metric"])))
        assert np.isclose(row["random_mean"], want), row
    cmp = replicates.compare_replicates(s)
    assert set(cmp["penalty"]) == {"gradient"} and (cmp["n"] == 2).all() and (cmp["correction"] == "holm").all()
    assert (cmp["p_adjusted"] >= cmp["p_value"] - 1e-12).all()


def test_summary_carries_the_random_control_beside_every_row(replicated):
    summ = analysis.load(replicated).summary()
    expl = summ[summ["method"] == "saliency"]
    assert expl["random_mean"].notna().all()
    own = summ[summ["method"] == "random"].set_index(["model_id", "metric"])["mean"]
    r = expl[expl["metric"] == "morf"].iloc[0]
    assert np.isclose(r["random_mean"], own[(r["model_id"], "morf")])
    assert summ[summ["method"] == ""]["random_mean"].isna().all()


def test_results_page_and_csv(replicated, tmp_path):
    page = build_results(replicated, tmp_path / "results.md")
    text = page.read_text()
    csv = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert list(csv.columns) == CSV_COLUMNS and set(csv["n"]) <= {1, 2} and (csv["n"] == 2).any()
    assert "random (control)" in text and "ROAR's random-ranking control" in text
    assert "paired t-test over seeds" in text and "How this was produced" in text and "wall time" in text
    assert "python -m study.launch --config replicate" in text
    import json

    run = json.loads((replicated / "runs.jsonl").read_text().splitlines()[-1])
    assert f"started {run['started']}, finished after" in text  # the start time is not called the end
    assert (tmp_path / "results" / "img" / "mnist_accuracy_vs_explanation.png").stat().st_size > 1000
    assert "The original study beside this one" in text and "whose maps, whose model" in text
    beside = pd.read_csv(tmp_path / "results" / "original.csv")
    measured = beside[beside["n"] > 0]
    assert set(measured["penalty"]) == {"none", "gradient"} and (measured["n"] == 2).all()
    assert set(measured["metric"]) == {"test_accuracy", "morf_auc", "morf_auc_with_baseline_maps", "faithfulness",
                                       "complexity", "roar_auc", "gaussian_auc", "block_auc"}  # no symmetry model
    rep = replicates.replicates(analysis.load(replicated))
    got = csv.set_index(["penalty", "method", "metric"])["mean"]
    want = rep.assign(method=rep["method"].fillna("")).set_index(["penalty", "method", "metric"])["mean"]
    key = ("gradient", "saliency", "morf")
    assert np.isclose(got[key], want[key], rtol=1e-5)


def test_the_readme_block_is_rewritten_by_the_command(replicated, tmp_path):
    """The README's results table comes from `study.publish … --readme README.md`, not a copy:
    only the text between the markers changes; a README without them is refused, untouched."""
    from study.publish import README_BEGIN, README_END

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n\n{README_BEGIN}\nold table\n{README_END}\n\n## After\nkept\n")
    r = subprocess.run([sys.executable, "-m", "study.publish", str(replicated), "docs/results.md",
                        "--readme", "README.md", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = readme.read_text()
    assert text.startswith("# x\n\n## Results\n\n" + README_BEGIN)
    assert text.endswith(f"{README_END}\n\n## After\nkept\n")
    block = text[text.index(README_BEGIN):text.index(README_END)]
    assert "old table" not in block and "**[docs/results.md](docs/results.md)**" in block
    assert "| penalty | mnist: test acc., all test images (%) ↑ | mnist: MoRF ↑ |" in block
    assert "| random (control) |" in block
    assert "python -m study.launch --config replicate" in block
    page = (tmp_path / "docs" / "results.md").read_text()
    row = next(ln for ln in page.splitlines() if ln.startswith("| gradient (2 seeds)")).split(" | ")
    brief = next(ln for ln in block.splitlines() if ln.startswith("| gradient |")).split(" | ")
    assert brief[1:3] == [row[2], row[4]]  # test accuracy and MoRF: the same cells as the page's
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    r = subprocess.run([sys.executable, "-m", "study.publish", str(replicated), "docs/results.md",
                        "--readme", str(bare), "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "needs one <!-- results:begin --> line" in r.stderr, r.stderr
    assert bare.read_text() == "no markers\n"


def test_report_shows_the_random_control_row_in_each_metric_table(replicated, tmp_path):
    from study.report import build_report

    path = build_report(replicated, ["md"], out_dir=tmp_path / "rep", n_images=0)
    text = path.read_text()
    table = [ln for ln in text.splitlines() if ln.startswith("| Saliency") or ln.startswith("| ↳ random control")]
    pairs = [(a, b) for a, b in zip(table, table[1:]) if a.startswith("| Saliency")]
    assert pairs and all(b.startswith("| ↳ random control") for _, b in pairs)


def test_pages_name_the_study_folder_relative_or_as_outputs_name_never_by_machine_path(
    replicated, tmp_path, monkeypatch
):
    """The page and the README block show the study folder (and the run's absolute `--output`) relative to the
    current directory when it is under it, else as `outputs/<name>`: a reader's machine has no such path."""
    from study.publish import README_BEGIN, README_END

    def publish(cwd: Path) -> str:
        monkeypatch.chdir(cwd)
        readme = tmp_path / "README.md"
        readme.write_text(f"# x\n\n{README_BEGIN}\nold\n{README_END}\n")
        page = build_results(replicated, tmp_path / "docs" / "results.md", readme=readme).read_text()
        return page + readme.read_text()

    elsewhere = publish(tmp_path)  # the study is not under tmp_path
    assert str(replicated) not in elsewhere and str(replicated.parent) not in elsewhere
    assert "`python -m study.publish outputs/study " in elsewhere
    assert "--output outputs/study " in elsewhere  # the recorded launch command, twice (page and README)
    assert elsewhere.count("--output outputs/study ") == 2
    under = publish(replicated.parent)  # the study is ./study
    assert str(replicated) not in under
    assert "`python -m study.publish study " in under and "--output study " in under


def test_full_test_accuracy_and_penalty_values_per_epoch_are_published(replicated, tmp_path):
    """Every selected model's accuracy on all 10 000 test images is in the evaluation table, the results page and
    the report (beside the explained images' accuracy); every trial's six penalty values per epoch are in the
    epochs table and the report plots them for the selected models."""
    from study import penalty_curves
    from study.report import build_report

    s = analysis.load(replicated)
    full = s.evaluation[s.evaluation["metric"] == "full_test_accuracy"]
    models = s.evaluation["model_id"].unique()
    assert full.groupby("model_id")["sample"].nunique().to_dict() == {m: 10_000 for m in models} and len(models) == 4
    assert list(penalty_curves.COLUMNS) == [c for c in s.epochs.columns if c in penalty_curves.COLUMNS]
    assert s.epochs[list(penalty_curves.COLUMNS)].notna().all().all() and (s.epochs["val_gradient"] > 0).all()
    v = penalty_curves.values_per_epoch(s)
    assert set(v["measured"]) == {"gradient", "consistency", "smoothness", "locality", "fidelity", "symmetry"}
    assert v["trial_id"].nunique() == len(s.selected)
    text = build_results(replicated, tmp_path / "results.md").read_text()
    assert "test acc., all test images (%) ↑" in text and "acc. on the explained images (%) ↑" in text
    report = build_report(replicated, ["md"], out_dir=tmp_path / "rep", n_images=0).read_text()
    assert "Every penalty's value during training" in report and "penalty_values_mnist.png" in report
    assert (tmp_path / "rep" / "img" / "penalty_values_mnist.png").stat().st_size > 1000
    assert "test acc., all test images" in report
