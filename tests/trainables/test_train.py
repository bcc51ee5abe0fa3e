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
    cfg = TrainConfig(
        dataset="mnist", penalty=name, lam=0.1, epochs=1, batch_size=64, data_fraction=0.04, val_limit=2000
    )
    (rec,) = list(train(cfg, mnist))
    assert rec["val_acc"] > 0.5, rec  # chance is 0.1
    assert rec["ce"] > 0 and (rec["penalty_value"] > 0) == (name != "none")
    assert rec["train_loss"] == pytest.approx(rec["ce"] + 0.1 * rec["penalty_value"], rel=1e-6)


def test_cnn4b_fashion_run(fashion):
    cfg = TrainConfig(
        dataset="fashion-mnist", penalty="gradient", epochs=1, batch_size=64, data_fraction=0.02, val_limit=500
    )
    assert cfg.model == "cnn4b"
    (rec,) = list(train(cfg, fashion))
    assert rec["val_acc"] > 0.4


@pytest.mark.parametrize("dataset, name", [("mnist", "symmetry"), ("fashion-mnist", "consistency")])
def test_same_seed_same_records(dataset, name, mnist, fashion):
    splits = mnist if dataset == "mnist" else fashion
    cfg = TrainConfig(
        dataset=dataset, penalty=name, epochs=2, batch_size=64, data_fraction=0.005, val_limit=300, seed=3
    )
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
        [
            sys.executable,
            "-m",
            "trainables.train",
            "--dataset",
            "mnist",
            "--penalty",
            "smoothness",
            "--lam",
            "0.1",
            "--epochs",
            "1",
            "--data-fraction",
            "0.01",
            "--data-root",
            str(data_root),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["config"]["penalty"] == "smoothness"
    assert lines[1]["epoch"] == 1 and 0 < lines[1]["val_acc"] <= 1
    bad = subprocess.run(
        [sys.executable, "-m", "trainables.train", "--penalty", "bogus"], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown penalty 'bogus'" in bad.stderr


def test_standard_batch_norm_trains_the_loss_through_torchs_batchnorm_and_keeps_g_exact(fashion):
    """cnn4b's cross-entropy goes through torch's BatchNorm; the penalty's g keeps the batch
    statistics constant (the exact per-sample form, checked against a per-sample loop in test_saliency)."""
    import torch.nn.functional as F

    from foundations.data import to_float
    from trainables.models import batch_statistics_constant, build_model, frozen_running_stats
    from trainables.saliency import input_gradient
    from trainables.train import training_step_loss

    torch.manual_seed(0)
    x, y = to_float(fashion.train_x[:8]), fashion.train_y[:8]
    ours = build_model("cnn4b").train()
    ref = torch.nn.Sequential(*[torch.nn.BatchNorm2d(m.num_features) if isinstance(m, torch.nn.BatchNorm2d) else m
                                for m in build_model("cnn4b")]).train()
    ref.load_state_dict(ours.state_dict())
    for m in list(ours.modules()) + list(ref.modules()):  # no dropout: the two forwards are comparable
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    loss, _, _ = training_step_loss(ours, x, y, TrainConfig(dataset="fashion-mnist", penalty="none", lam=0.0),
                                    torch.Generator())
    loss.backward()
    ref_loss = F.cross_entropy(ref(x), y)
    ref_loss.backward()
    assert torch.allclose(loss, ref_loss)
    for (n, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=n)
    # the constant statistics for the loss too (the former training): another gradient
    ours.zero_grad()
    const = TrainConfig(dataset="fashion-mnist", penalty="none", lam=0.0, batch_norm="constant")
    training_step_loss(ours, x, y, const, torch.Generator())[0].backward()
    assert any(not torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6) for a, b in zip(ours.parameters(),
                                                                                      ref.parameters()))
    # with a penalty, R comes from g under constant statistics, not from torch's (sample-mixing) BatchNorm
    _, _, r = training_step_loss(ours, x, y, TrainConfig(dataset="fashion-mnist", penalty="gradient", lam=0.1),
                                 torch.Generator())
    with batch_statistics_constant(ours, True), frozen_running_stats(ours):
        _, g = input_gradient(ours, x, y, create_graph=False)
    with batch_statistics_constant(ours, False), frozen_running_stats(ours):
        _, g_mixed = input_gradient(ours, x, y, create_graph=False)
    assert torch.allclose(r, g.abs().mean(), rtol=1e-5) and not torch.allclose(r, g_mixed.abs().mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="batch_norm: unknown 'torch'; valid choices: standard, constant"):
        TrainConfig(dataset="fashion-mnist", batch_norm="torch")
