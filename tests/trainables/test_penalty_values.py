"""Every penalty's value per epoch on the fixed validation batch: recomputed independently from a saved
model, present in the epochs table's schema, and older epochs tables without them still load."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from foundations import schemas as R
from foundations import seeds
from foundations.data import to_float
from trainables import penalty_values as pv
from trainables.models import build_model
from trainables.penalties import Batch, penalty
from trainables.train import TrainConfig, TrainRun


@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory):
    cfg = TrainConfig(dataset="mnist", penalty="locality", lam=0.5, penalty_params={"s": 0.05}, epochs=1,
                      batch_size=64, data_fraction=0.01, seed=3, split_seed=0, device="cpu")
    run = TrainRun(cfg, mnist)
    rec = run.run_epoch()
    path = tmp_path_factory.mktemp("m") / "model.pt"
    torch.save(run.model.state_dict(), path)
    return cfg, rec, path


def test_each_penalty_recomputed_from_the_saved_model_and_the_fixed_batch(trained, mnist):
    cfg, rec, path = trained
    assert set(pv.COLUMNS) <= set(rec) and len(pv.COLUMNS) == 6
    model = build_model("cnn3b")
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    idx = torch.randperm(len(mnist.val_y), generator=torch.Generator().manual_seed(seeds.mix(0, 5)))[:256].sort().values
    x, y = to_float(mnist.val_x[idx]), mnist.val_y[idx].long()
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (g,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), xg)
    # by hand where the penalty is a formula of g alone
    assert rec["val_gradient"] == pytest.approx(g.abs().mean().item(), rel=1e-5)
    tv = ((g[..., 1:, :] - g[..., :-1, :]).abs().sum() + (g[..., :, 1:] - g[..., :, :-1]).abs().sum()) / g.numel()
    assert rec["val_smoothness"] == pytest.approx(tv.item(), rel=1e-5)
    # the others with the penalty functions, the trained penalty with its own s, symmetry's angle seeded as recorded
    for name, params in (("consistency", {}), ("locality", {"s": 0.05}), ("fidelity", {}), ("symmetry", {})):
        gen = torch.Generator().manual_seed(seeds.mix(0, 6))
        expected = penalty(name, Batch(model, x, y, logits.detach(), g, gen), **params).item()
        assert rec[f"val_{name}"] == pytest.approx(expected, rel=1e-4, abs=1e-7), name
    default_locality = penalty("locality", Batch(model, x, y, logits.detach(), g, None)).item()
    assert not math.isclose(rec["val_locality"], default_locality, rel_tol=1e-6)  # s=0.05, not the default


def test_values_are_the_same_on_a_second_measurement_and_leave_the_mode(trained, mnist):
    cfg, rec, path = trained
    model = build_model("cnn3b")
    model.load_state_dict(torch.load(path, weights_only=True))
    model.train()
    x, y = pv.probe_batch(mnist.val_x, mnist.val_y, 0)
    a = pv.penalty_values(model, x, y, own="locality", own_params={"s": 0.05})
    assert model.training and a == pv.penalty_values(model, x, y, own="locality", own_params={"s": 0.05})
    assert a == {k: pytest.approx(rec[k], rel=1e-5, abs=1e-8) for k in pv.COLUMNS}


def test_epochs_schema_has_the_columns_and_old_tables_still_load(tmp_path):
    from study.loading import read_study_table

    assert tuple(f"val_{p}" for p in R.PENALTY_VALUE_NAMES) == pv.COLUMNS  # foundations cannot import trainables
    assert set(pv.COLUMNS) <= set(R.EPOCHS.names)
    old = pa.schema([f for f in R.EPOCHS if f.name not in pv.COLUMNS and f.name not in ("dataset", "penalty")])
    row = {f.name: [None] for f in old}
    row.update(study=["s"], trial_id=["t1"], epoch=[1], val_acc=[0.9])
    folder = tmp_path / "epochs" / "dataset=mnist" / "penalty=none"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pydict(row, schema=old), folder / "old.parquet")
    df, present = read_study_table(tmp_path, "epochs")
    assert present and df["val_acc"].tolist() == [0.9]
    assert all(c in df.columns and df[c].isna().all() for c in pv.COLUMNS)
    new = pd.DataFrame([{**{f.name: None for f in R.EPOCHS}, "study": "s", "dataset": "mnist", "penalty": "none",
                         "trial_id": "t2", "epoch": 1, "val_gradient": 0.25}])
    R.write_table(new, tmp_path, "epochs", key="new")
    df, _ = read_study_table(tmp_path, "epochs")
    assert df.set_index("trial_id")["val_gradient"].to_dict()["t2"] == 0.25
