"""Complexity: analytic values, Quantus equality, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.metrics.complexity import complexity


def test_uniform_and_one_hot(batch):
    _, x, _, t, _ = batch
    uniform = torch.full_like(x[:3], 0.7)
    torch.testing.assert_close(
        complexity(None, x[:3], t[:3], uniform), torch.full((3,), math.log(784), dtype=torch.float64)
    )
    one_hot = torch.zeros_like(x[:3])
    one_hot[:, 0, 5, 7] = -2.0  # sign is ignored (absolute values)
    torch.testing.assert_close(
        complexity(None, x[:3], t[:3], one_hot), torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0
    )


def test_matches_per_image_formula_and_quantus(batch):
    quantus = pytest.importorskip("quantus")
    model, x, _, t, a = batch
    ours = complexity(model, x, t, a)
    loop = []
    for i in range(x.shape[0]):
        p = a[i].flatten().double().abs()
        p = p / p.sum()
        loop.append(-(p * torch.log(p + 1e-12)).sum().item())
    torch.testing.assert_close(ours, torch.tensor(loop, dtype=torch.float64), atol=1e-9, rtol=0)
    q = quantus.Complexity(abs=True, normalise=False, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy().astype(np.float64), device="cpu"
    )
    np.testing.assert_allclose(ours.numpy(), np.asarray(q, dtype=np.float64), atol=1e-6, rtol=0)
    assert (ours > 0).all() and (ours < math.log(784)).all()


def test_bad_input(batch):
    _, x, _, t, a = batch
    with pytest.raises(ValueError, match="all-zero"):
        complexity(None, x[:2], t[:2], torch.zeros_like(x[:2]))
    with pytest.raises(ValueError, match="shape of x"):
        complexity(None, x[:2], t[:2], a[:2, :, :27])
    with pytest.raises(ValueError, match="non-empty"):
        complexity(None, x[:0], t[:0], a[:0])
    nan = a[:2].clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        complexity(None, x[:2], t[:2], nan)


def test_the_original_formula_by_hand_on_a_four_pixel_map():
    """complexity_seed = −Σ P ln(P + 0.01), by hand on P = (0.5, 0.25, 0.25, 0): the original's constant, kept apart."""
    from evaluation.metrics.complexity import entropy

    a = torch.tensor([[[[2.0, -1.0], [1.0, 0.0]]]])
    by_hand = -(0.5 * math.log(0.51) + 2 * 0.25 * math.log(0.26))
    assert entropy(a, 0.01).item() == pytest.approx(by_hand, abs=1e-12)
    assert entropy(a).item() == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)), abs=1e-9)
