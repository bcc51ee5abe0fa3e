"""A study folder is self-contained: the ``selected`` table names its model files relative to the folder,
and the evaluation stage resolves them in the folder it evaluates. A copied study without its ``models/``
is refused with one line (it used to evaluate the original folder's models); a moved study evaluates its
own models (it used to fail on the old path); studies written with absolute paths still read.
Really trained models, real Parquet, a real local Ray (2 CPUs) for the stage."""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch

from evaluation import stage
from foundations import model_paths
from foundations import schemas as R
from tests.evaluation.stage_fixtures import make_selected, small_settings


def _settings():
    s = small_settings(metrics=["complexity"], n_samples=6, chunk_size=6)
    return replace(s, evaluation=replace(s.evaluation, metrics=["complexity"]))


def _old_study(root, mnist) -> pd.DataFrame:
    """A study as written before paths were relative: absolute model paths in its selected table."""
    selected = make_selected(root, mnist)
    import pyarrow as pa

    blank = {f.name: "" if pa.types.is_string(f.type) else False if pa.types.is_boolean(f.type) else 0
             for f in R.SELECTED if f.name not in selected}
    R.write_table(selected.assign(**blank), root, "selected", key="test")
    return R.read_table(root, "selected")


def test_selection_stores_model_paths_relative_to_the_study(tmp_path, mnist):
    from study import search
    from study.config import load_config
    from trainables.trainable import STATE_FILE

    out = tmp_path / "study"
    sel = make_selected(tmp_path / "train", mnist, penalties=("none",))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    sd = torch.load(sel.loc[0, "weights_path"], map_location="cpu")
    torch.save({"run": {"model": sd}}, ckpt / STATE_FILE)
    cfg = load_config("quick", [f"output={out}", "datasets=[mnist]", "penalties=[none]"])
    trials = pd.DataFrame([{c: None for c in R.TRIALS.names}])
    trials = trials.assign(dataset="mnist", penalty="none", trial_id="t0", status="ok", val_acc=0.9, val_morf=0.1,
                           model="cnn3b", lam=0.0, lr=0.01, seed=0, on_pareto_front=True, git_commit="",
                           train_config='{"dataset": "mnist"}', checkpoint_path=str(ckpt))
    row = search.select(cfg, trials).iloc[0]
    assert row["weights_path"] == "models/mnist/none/model.pt", row["weights_path"]
    assert row["config_path"] == "models/mnist/none/config.json", row["config_path"]
    assert model_paths.resolve(out, row["weights_path"]) == str(out / "models/mnist/none/model.pt")


@pytest.mark.ray
def _relocated(tmp_path, mnist, relocate, name: str):
    """A finished study built in one folder, then copied or moved (``relocate``) to ``name``."""
    root = tmp_path / "original"
    _old_study(root, mnist)
    relocate(root, tmp_path / name)
    return tmp_path / name


def test_a_copied_study_without_its_models_is_refused_not_fed_the_originals(tmp_path, mnist, ray_local):
    copy = _relocated(tmp_path, mnist, shutil.copytree, "copy")
    shutil.rmtree(copy / "models")
    with pytest.raises(model_paths.ModelPathError, match=r"is not in the study folder .*copy") as e:
        stage.run_stage(R.read_table(copy, "selected"), _settings(), copy, log=lambda _m: None)
    assert "\n" not in str(e.value)
    assert not (copy / "evaluation").exists()


@pytest.mark.ray
def test_a_moved_study_evaluates_its_own_models(tmp_path, mnist, ray_local):
    moved = _relocated(tmp_path, mnist, shutil.move, "after")
    stats = stage.run_stage(R.read_table(moved, "selected"), _settings(), moved, log=lambda _m: None)
    assert stats["submitted"] == 2
    assert set(pd.read_parquet(moved / "evaluation")["penalty"]) == {"none", "gradient"}


def test_a_relative_path_never_falls_back_to_another_folder(tmp_path):
    (tmp_path / "a" / "models" / "mnist" / "none").mkdir(parents=True)
    (tmp_path / "a" / "models" / "mnist" / "none" / "model.pt").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    assert model_paths.resolve(tmp_path / "a", "models/mnist/none/model.pt") == str(
        tmp_path / "a" / "models/mnist/none/model.pt")
    with pytest.raises(model_paths.ModelPathError, match="missing from the study folder"):
        model_paths.resolve(tmp_path / "b", "models/mnist/none/model.pt")


@pytest.mark.ray
def test_evaluating_a_copy_without_its_models_stops_the_launch_with_one_line(tmp_path, mnist, data_root):
    """`--resume --stage evaluate` on a copied study whose models/ was removed: exit 2, one line naming the
    model file and the folder (it used to evaluate the original folder's models and exit 0)."""
    import subprocess

    from study import search
    from study.config import load_config
    from tests.study.test_launch_faults import REPO, _env

    root = tmp_path / "original"
    _old_study(root, mnist)
    search.check_output(load_config("quick", [f"output={root}", "name=test", "datasets=[mnist]",
                                              "penalties=[none, gradient]", "evaluation.metrics=[complexity]",
                                              "evaluation.n_samples=6", "evaluation.chunk_size=6"]))
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "models")
    r = subprocess.run([sys.executable, "-m", "study.launch", "--resume", "--output", str(copy), "--stage",
                        "evaluate", "--num-cpus", "2", "-q"], cwd=REPO, env=_env(data_root), capture_output=True,
                       text=True, timeout=600, start_new_session=True)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: selected: model file ") and f"{copy}" in err[0], r.stderr
    assert not (copy / "evaluation").exists()
