"""ROAR on a tiny real-data setting (no Ray: the stage's fan-out is tested in test_stage.py)."""

from __future__ import annotations

import pytest
import torch

from evaluation.roar import area, pixel_ranks, ranks_from_attributions, remove_top, retrain
from trainables.train import TrainConfig

CFG = TrainConfig(dataset="mnist", epochs=1, batch_size=64, seed=0)


def test_ranks_and_removal_are_exact():
    a = torch.zeros(2, 784)
    a[0, [5, 9, 700]] = torch.tensor([1.0, 3.0, 2.0])
    a[1] = torch.linspace(0, 1, 784)
    r = ranks_from_attributions(a, seed=0)
    assert r.dtype == torch.int16
    assert r[0, 9] == 0 and r[0, 700] == 1 and r[0, 5] == 2
    assert torch.equal(r[1], torch.arange(783, -1, -1, dtype=torch.int16))
    assert sorted(r[0].tolist()) == list(range(784))  # a permutation
    x = torch.full((2, 28, 28), 200, dtype=torch.uint8)
    out = remove_top(x, r, 3 / 784, value=0.5)
    assert (out.view(2, -1)[0, [9, 700, 5]] == 128).all() and (out != 200).sum() == 6
    assert torch.equal(remove_top(x, r, 0.0, 0.5), x)
    with pytest.raises(ValueError, match="fraction"):
        remove_top(x, r, 1.5, 0.0)
    # ties are broken by a seeded permutation, not raster order
    flat = ranks_from_attributions(torch.zeros(1, 784), seed=1)
    assert not torch.equal(flat[0], torch.arange(784, dtype=torch.int16))
    assert torch.equal(flat, ranks_from_attributions(torch.zeros(1, 784), seed=1))


def test_area_is_trapezoid():
    assert area([0.1, 0.5, 0.9], [1.0, 1.0, 1.0]) == pytest.approx(0.8)
    assert area([0.9, 0.1], [0.0, 1.0]) == pytest.approx(0.4)


def test_saliency_removal_lowers_retrained_accuracy(trained_cnn3b, mnist):
    sal = pixel_ranks(trained_cnn3b, mnist, "saliency", data_fraction=0.05, n_test=1000, seed=0)
    rnd = pixel_ranks(None, mnist, "random", data_fraction=0.05, n_test=1000, seed=0)
    assert len(sal.train_ranks) == len(sal.train_idx) == 2700 and len(sal.test_ranks) == 1000
    clean = retrain(mnist, sal, 0.0, CFG)["accuracy"]
    high = retrain(mnist, sal, 0.9, CFG)
    control = retrain(mnist, rnd, 0.9, CFG)
    assert clean > 0.5
    print("clean", clean, "saliency@0.9", high["accuracy"], "random@0.9", control["accuracy"])
    assert high["accuracy"] < clean - 0.1, (clean, high)
    assert control["method"] == "random" and 0 <= control["accuracy"] <= 1
    again = retrain(mnist, sal, 0.9, CFG)
    assert again["accuracy"] == high["accuracy"]  # deterministic for a seed
    other = retrain(mnist, sal, 0.9, CFG, repeat=1)
    assert other["repeat"] == 1
