"""Training loop: real short runs, determinism, resume, and up-front validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.penalties import PENALTIES
from trainables.train import NonFiniteLossError, TrainConfig, TrainRun, train

REPO = Path(__file__).resolve().parents[2]
TIMING = {"train_seconds", "samples_per_s", "seconds"}


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.mark.parametrize("name", list(PENALTIES))
def test_short_real_run_beats_chance(name, mnist):
    cfg = TrainConfig(dataset="mnist", penalty=name, lam=0.1, epochs=1, batch_size=64, data_fraction=0.04, val_limit=2000)
    (rec,) = list(train(cfg, mnist))
    assert rec["val_acc"] > 0.5, rec  # chance is 0.1
    assert rec["ce"] > 0 and (rec["penalty_value"] > 0) == (name != "none")
    assert rec["train_loss"] == pytest.approx(rec["ce"] + 0.1 * rec["penalty_value"], rel=1e-6)


def test_cnn4b_fashion_run(fashion):
    cfg = TrainConfig(dataset="fashion-mnist", penalty="gradient", epochs=1, batch_size=64, data_fraction=0.02, val_limit=500)
    assert cfg.model == "cnn4b"
    (rec,) = list(train(cfg, fashion))
    assert rec["val_acc"] > 0.4


@pytest.mark.parametrize("dataset, name", [("mnist", "symmetry"), ("fashion-mnist", "consistency")])
def test_same_seed_same_records(dataset, name, mnist, fashion):
    splits = mnist if dataset == "mnist" else fashion
    cfg = TrainConfig(dataset=dataset, penalty=name, epochs=2, batch_size=64, data_fraction=0.005, val_limit=300, seed=3)
    a, b = _strip(train(cfg, splits)), _strip(train(cfg, splits))
    assert a == b
    c = _strip(train(TrainConfig(**{**cfg.to_dict(), "seed": 4}), splits))
    assert c != a


def test_resume_at_epoch_boundary_is_exact(mnist):
    cfg = TrainConfig(dataset="mnist", penalty="symmetry", epochs=2, batch_size=64, data_fraction=0.01, val_limit=300)
    straight = TrainRun(cfg, mnist)
    full = _strip(straight)
    first = TrainRun(cfg, mnist)
    rec1 = first.run_epoch()
    state = first.state_dict()
    resumed = TrainRun(cfg, mnist)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == 1
    assert _strip([rec1] + rest) == full
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("penalty", "sparsity", "valid choices: none, gradient, consistency"),
        ("lam", -0.5, "lam: must be a finite number >= 0, got -0.5"),
        ("batch_size", 0, "batch_size: must be an integer >= 1, got 0"),
        ("dataset", "cifar10", "valid choices: mnist, fashion-mnist"),
        ("model", "vgg", "valid choices: cnn3b, cnn4b"),
        ("optimizer", "lbfgs", "valid choices: adam, sgd"),
        ("data_fraction", 0.0, "data_fraction: must be in (0, 1]"),
    ],
)
def test_bad_configuration_is_rejected_before_training(field, value, message):
    with pytest.raises(ValueError) as exc:
        TrainConfig(**{field: value})
    assert message in str(exc.value)


def test_non_finite_loss_names_epoch_and_batch(mnist):
    cfg = TrainConfig(dataset="mnist", optimizer="sgd", lr=1e12, epochs=1, batch_size=64, data_fraction=0.05)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, batch \d+"):
        list(train(cfg, mnist))


def test_cli_prints_records(data_root):
    proc = subprocess.run(
        [sys.executable, "-m", "trainables.train", "--dataset", "mnist", "--penalty", "smoothness",
         "--lam", "0.1", "--epochs", "1", "--data-fraction", "0.01", "--data-root", str(data_root)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert lines[0]["config"]["penalty"] == "smoothness"
    assert lines[1]["epoch"] == 1 and 0 < lines[1]["val_acc"] <= 1
    bad = subprocess.run([sys.executable, "-m", "trainables.train", "--penalty", "bogus"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown penalty 'bogus'" in bad.stderr
