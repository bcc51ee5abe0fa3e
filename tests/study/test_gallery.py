"""The saliency gallery travels as a table: the evaluation stage writes ``gallery``, the report plots it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from evaluation import stage
from evaluation.attributions import attribute
from study import analysis
from study import loading
from foundations import model_paths, schemas
from tests.study.report_fixture import METHODS, N_EVAL
from tests.study.test_report import copy_study

REPO = Path(__file__).resolve().parents[2]


def test_the_stage_writes_the_first_evaluated_images_with_each_methods_map(tiny_study, mnist):
    from foundations.data import to_float

    g = schemas.read_table(tiny_study, "gallery")
    sel = schemas.read_table(tiny_study, "selected")
    assert list(g.columns) == schemas.GALLERY.names
    n = stage.Evaluation().gallery_n
    idx = stage.sample_indices(len(mnist.test_y), N_EVAL, 0)[:n]
    for _, row in sel.iterrows():
        rows = g[g["model_id"] == stage.model_id(row)]
        assert sorted(set(rows["method"])) == sorted(METHODS)
        model = stage.load_selected_model(model_paths.resolve_row(tiny_study, row.to_dict()))
        x = to_float(mnist.test_x[idx])
        pred = model(x).argmax(1)
        for method in METHODS:
            r = rows[rows["method"] == method].sort_values("position")
            assert r["position"].tolist() == list(range(n)) and r["sample"].tolist() == idx.tolist()
            assert r["label"].tolist() == mnist.test_y[idx].tolist() and r["prediction"].tolist() == pred.tolist()
            assert all(len(v) == 784 for v in r["map"]) and all(len(v) == 784 for v in r["image"])
            np.testing.assert_allclose(np.stack(r["image"].to_list()), x.flatten(1).numpy(), atol=1e-7)
            maps = attribute(model, x, pred, method, seed=0).flatten(1).numpy()
            np.testing.assert_allclose(np.stack(r["map"].to_list()), maps, rtol=1e-5, atol=1e-7)
    s = analysis.load(tiny_study)
    assert len(s.gallery) == len(g) and "gallery" not in s.missing


def test_the_report_plots_the_table_without_weights_data_or_torch(tiny_study, tmp_path):
    d = copy_study(tiny_study, tmp_path / "study", keep=None)
    for f in (d / "models").rglob("*.pt"):
        f.unlink()  # the gallery must not need the weights
    conf = yaml.safe_load((d / "config.yaml").read_text())
    conf["data_root"] = str(tmp_path / "no-data")  # nor the data
    (d / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    code = ("import json, sys; from study.report import build_report; "
            f"p = build_report({str(d)!r}, formats=('md',), n_images=4); "
            "print(json.dumps({'path': str(p), 'torch': 'torch' in sys.modules}))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "SALIENCY_DATA_ROOT"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    md = Path(out["path"]).read_text()
    assert "weights not found" not in md and "No gallery" not in md
    assert "The first 4 evaluated test images" in md
    names = {p.name for p in (d / "report" / "img").glob("gallery_*.png")}
    assert names == {f"gallery_mnist_{m}.png" for m in METHODS}


def test_a_gallery_table_round_trips_through_the_analysis(tmp_path):
    rows = [{"study": "s", "dataset": "fashion-mnist", "penalty": "none", "model_id": "none-t1", "method": "saliency",
             "position": j, "sample": 10 + j, "label": j, "prediction": j, "image": np.zeros(784, np.float32),
             "map": np.full(784, j, np.float32), "seed": 0} for j in range(3)]
    import pandas as pd

    schemas.write_table(pd.DataFrame(rows), tmp_path, "gallery", key="none-t1")
    (tmp_path / "config.yaml").write_text("name: s\n")
    s = analysis.load(tmp_path)
    assert s.gallery["sample"].tolist() == [10, 11, 12] and s.missing == list(loading.TABLES)
    assert float(np.asarray(s.gallery["map"].iloc[2]).mean()) == 2.0
