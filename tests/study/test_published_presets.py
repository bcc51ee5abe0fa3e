"""The presets behind the published page beyond `replicate` run end to end in a smoke version (tiny data,
1 epoch, 2 grid points) and give the page everything it needs: `replicate-fashion` (per-class accuracy) and
`lambda-response` (every grid point's model evaluated, the λ figure and table, the search-versus-grid table),
and the randomisation test of a copy of the Fashion-MNIST study evaluated with `mprt` alone (docs/evaluation.md).
The Fashion-MNIST smoke trains cnn3b instead of the preset's cnn4b (~15x the cost per image on a CPU): what it
checks is the preset's path through the study, not the model. `lambda-search` differs from `quick` only in
values (its search is the search of every other test); here the grid stands in for it, compared with itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study import analysis
from study import lambda_response as L
from study.publish import build_results
from tests.ray_utils import ray_env

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]
TINY = ["training.epochs=1", "training.data_fraction=0.005", "training.val_limit=200", "search.explain_n=20",
        "penalties=[none, gradient]", "evaluation.n_samples=8", "evaluation.chunk_size=8"]


def _launch(out: Path, preset: str | None, data_root, *sets: str) -> Path:
    """``--config preset`` with :data:`TINY`; without a preset, ``--resume --stage evaluate`` of ``out``."""
    how = ["--config", preset] if preset else ["--resume", "--stage", "evaluate"]
    cmd = [sys.executable, "-m", "study.launch", *how, "--output", str(out), "-q", "--num-cpus", "2"]
    for s in (*(TINY if preset else ()), *sets):
        cmd += ["--set", s]
    r = subprocess.run(cmd, cwd=REPO, env=ray_env({**os.environ, "SALIENCY_DATA_ROOT": str(data_root)}),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory, data_root) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    fashion = _launch(root / "fashion", "replicate-fashion", data_root, "search.trials=2",
                      "per_dataset={fashion-mnist: {model: cnn3b}}", "evaluation.map_models=[own, none]",
                      "evaluation.method_params={integrated_gradients: {n_steps: 4}}",
                      "evaluation.roar.data_fraction=0.003", "evaluation.roar.n_test=100",
                      "evaluation.roar.fractions=[0.5]")
    shutil.copytree(fashion, root / "fashion-mprt")  # the randomisation test on a copy (docs/evaluation.md)
    return {
        "fashion": fashion,
        "mprt": _launch(root / "fashion-mprt", None, data_root, "evaluation.metrics=[mprt]",
                        "evaluation.map_models=[own]"),
        "grid": _launch(root / "grid", "lambda-response", data_root, "search.trials=1",
                        "search.space={default: {lam: {grid: [0.01, 1.0]}, lr: null}}"),
    }


def test_a_grid_study_evaluates_every_point_without_roar(studies):
    s = analysis.load(studies["grid"])
    g = s.selected[s.selected["penalty"] == "gradient"]
    assert sorted(g["lam"]) == [0.01, 1.0] and len(s.selected) == 3  # 2 grid points + the baseline, 1 seed each
    assert s.evaluation["model_id"].nunique() == 3 and s.roar.empty
    summ = L.summary(L.points(s))
    morf = summ[(summ["penalty"] == "gradient") & (summ["metric"] == "morf") & (summ["method"] == "saliency")]
    assert sorted(morf["lam"]) == [0.01, 1.0] and (morf["n"] == 1).all()
    assert set(L.rule_picks(s)["penalty"]) == {"none", "gradient"}


def test_the_copy_evaluated_with_mprt_alone_holds_its_rows_and_the_original_keeps_its_own(studies):
    m, f = analysis.load(studies["mprt"]), analysis.load(studies["fashion"])
    scored = m.evaluation[m.evaluation["method"] != ""]
    assert set(scored["metric"]) == {"mprt_spearman", "mprt_ssim"}
    assert sorted(set(scored["level"])) == [1.0, 2.0, 3.0]  # cnn3b: conv, conv, linear
    assert set(scored["method"]) == {"saliency", "integrated_gradients", "grad_cam", "random"}
    assert scored["model_id"].nunique() == len(f.selected)
    assert (scored[scored["method"] == "random"]["value"] == 1).all()  # the control ignores the model
    assert "mprt_spearman" not in set(f.evaluation["metric"]) and "morf" in set(f.evaluation["metric"])


def test_the_page_has_every_section_table_and_figure(studies, tmp_path):
    page = build_results([studies["fashion"]], tmp_path / "results.md", lambda_response_dir=studies["grid"],
                         lambda_search_dir=studies["grid"], mprt_dirs=[studies["mprt"]])
    text = page.read_text()
    folder = tmp_path / "results"
    for heading in ("fashion-mnist: every metric per penalty", "fashion-mnist: accuracy per class",
                    "What each penalty does as λ grows", "Does the search find it?",
                    "Are the maps about the model? The randomisation test"):
        assert heading in text, heading
    assert "| penalty | T-shirt/top | Trouser |" in text
    ca = pd.read_csv(folder / "class_accuracy.csv")
    assert ca.groupby("model_id")["n"].sum().eq(10_000).all() and ca["model_id"].nunique() == 4
    assert (folder / "img" / "mnist_lambda_response.png").stat().st_size > 5000
    assert (folder / "img" / "fashion-mnist_accuracy_vs_explanation.png").stat().st_size > 1000
    lr = pd.read_csv(folder / "lambda_response.csv")
    assert {0.01, 1.0} <= set(lr[lr["penalty"] == "gradient"]["lam"]) and "full_test_accuracy" in set(lr["metric"])
    sg = pd.read_csv(folder / "search_vs_grid.csv")
    assert list(sg["penalty"]) == ["gradient"] and sg["n_trials_search"].iloc[0] == sg["n_trials_grid"].iloc[0] == 2
    assert np.isfinite(sg["reference_val_acc"].iloc[0]) and sg["difference"].fillna(0).iloc[0] == 0  # itself
    assert (folder / "img" / "fashion-mnist_mprt_spearman.png").stat().st_size > 5000
    mp = pd.read_csv(folder / "mprt.csv")
    assert set(mp["level"]) == {1, 2, 3} and set(mp["penalty"]) == {"none", "gradient"} and (mp["n"] == 2).all()
    assert "--lambda-response" in text and "--lambda-search" in text and "--mprt" in text  # the command
