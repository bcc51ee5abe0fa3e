"""Square blocks: per-image loop, Captum infidelity with the same blocks, geometry, errors."""

from __future__ import annotations

import pytest
import torch
from captum.metrics import infidelity

from evaluation.metrics.square_block import block_geometry, block_images, draw_blocks, square_block


def _loop_block(img, u, s_max):
    """One image, one block, with slicing: the definition written out."""
    h = 2 + int(u[0].item() * (s_max - 1))
    r = int(u[1].item() * (28 - 2 * h + 1))
    c = int(u[2].item() * (28 - 2 * h + 1))
    out = img.clone()
    out[:, r : r + 2 * h, c : c + 2 * h] = 0.5 + 0.5 * u[3].item()
    return out


def test_matches_per_image_loop(batch):
    model, x, labels, t, a = batch
    x, labels, t, a = x[:10], labels[:10], t[:10], a[:10]
    s_max = (6, 8, 10, 12)
    blocks = draw_blocks(3, 10, seed=5)
    r = square_block(model, x, labels, a, s_max=s_max, blocks=blocks, target=t, batch_size=17)
    acc = torch.zeros(10, 4, dtype=torch.float64)
    inf = torch.zeros(10, 4, dtype=torch.float64)
    for i in range(10):
        with torch.no_grad():
            f0 = model(x[i : i + 1])[0, t[i]].item()
        for s, sm in enumerate(s_max):
            for k in range(3):
                xp = _loop_block(x[i], blocks[k, i], sm)
                with torch.no_grad():
                    out = model(xp[None])[0]
                acc[i, s] += (out.argmax().item() == labels[i].item()) / 3
                lin = ((x[i] - xp) * a[i]).double().sum().item()
                inf[i, s] += (lin - (f0 - out[t[i]].item())) ** 2 / 3
    torch.testing.assert_close(r.accuracy, acc)
    torch.testing.assert_close(r.infidelity, inf, atol=1e-5, rtol=1e-5)
    area = sum((s_max[j + 1] - s_max[j]) * (acc[:, j] + acc[:, j + 1]) / 2 for j in range(3))
    torch.testing.assert_close(r.area, area)
    # drawing the blocks itself from the seed gives the same values
    torch.testing.assert_close(square_block(model, x, labels, a, n_draws=3, seed=5).accuracy, acc)


def test_infidelity_equals_captum_with_same_blocks(batch):
    model, x, labels, t, a = batch
    x, t, a = x[:8], t[:8], a[:8]
    k, sm = 5, 8
    blocks = draw_blocks(k, 8, seed=2)
    r = square_block(model, x, labels[:8], a, s_max=[sm], blocks=blocks, target=t)
    perturbed = block_images(x, blocks, sm).transpose(0, 1).reshape(-1, *x.shape[1:])  # (B·K) in Captum's order

    def perturb(inputs):
        return inputs - perturbed, perturbed

    ref = infidelity(model, perturb, x, a, target=t, n_perturb_samples=k)
    torch.testing.assert_close(r.infidelity[:, 0], ref.double(), atol=1e-5, rtol=1e-4)


def test_geometry_covers_the_range_and_fits():
    u = draw_blocks(200, 50, seed=0)
    for sm in (2, 6, 14):
        h, r, c, v = block_geometry(u, sm)
        assert set(h.unique().tolist()) == set(range(2, sm + 1))
        assert (r >= 0).all() and (c >= 0).all() and (r + 2 * h <= 28).all() and (c + 2 * h <= 28).all()
        assert (r + 2 * h == 28).any() and (r == 0).any()
        assert (v >= 0.5).all() and (v < 1).all()


def test_seeds_and_direction(batch):
    model, x, labels, _, _ = batch
    r1 = square_block(model, x, labels, seed=1)
    assert torch.equal(r1.accuracy, square_block(model, x, labels, seed=1).accuracy)
    assert not torch.equal(draw_blocks(2, 5, 1), draw_blocks(2, 5, 2))
    assert r1.accuracy.mean(0)[0] >= r1.accuracy.mean(0)[-1]  # bigger blocks hurt more


@pytest.mark.parametrize("s_max", [[8, 6], [6, 6], [1, 4], [6, 15], [6.5, 8]])
def test_bad_s_max(batch, s_max):
    model, x, labels, _, _ = batch
    with pytest.raises(ValueError, match="s_max"):
        square_block(model, x[:2], labels[:2], s_max=s_max)


def test_bad_blocks_and_shape(batch):
    model, x, labels, _, a = batch
    with pytest.raises(ValueError, match="blocks must"):
        square_block(model, x[:2], labels[:2], blocks=torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="shape of x"):
        square_block(model, x[:2], labels[:2], a[:1])


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_normalized_infidelity_equals_captum_and_ignores_scale(batch, scale):
    """docs/spec.md §5: the primary infidelity is Captum's normalize=True (optimal β), invariant to the maps'
    scale."""
    model, x, labels, t, a = batch
    x, t, a = x[:8], t[:8], a[:8]
    k, sm = 5, 8
    blocks = draw_blocks(k, 8, seed=2)
    r = square_block(model, x, labels[:8], a * scale, s_max=[sm], blocks=blocks, target=t)
    base = square_block(model, x, labels[:8], a, s_max=[sm], blocks=blocks, target=t)
    perturbed = block_images(x, blocks, sm).transpose(0, 1).reshape(-1, *x.shape[1:])

    def perturb(inputs):
        return inputs - perturbed, perturbed

    ref = infidelity(model, perturb, x, a * scale, target=t, n_perturb_samples=k, normalize=True)
    torch.testing.assert_close(r.infidelity_normalized[:, 0], ref.double(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(r.infidelity_normalized, base.infidelity_normalized, atol=1e-6, rtol=1e-5)
    if scale != 1.0:  # the raw value is not scale-invariant: that is why it is only reported beside
        assert not torch.allclose(r.infidelity, base.infidelity, rtol=1e-2)


def test_area_with_clean_point_is_a_naive_trapezoid(batch):
    """Areas include the clean point (x = 0, clean accuracy): checked against a hand-written trapezoid."""
    from evaluation.metrics._common import area_with_clean_point

    y = torch.tensor([[0.9, 0.5, 0.2], [1.0, 1.0, 0.0]], dtype=torch.float64)
    xs = torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64)
    clean = torch.tensor([1.0, 0.0], dtype=torch.float64)
    naive = []
    for row, c in zip(y.tolist(), clean.tolist()):
        px, py = [0.0, 2.0, 4.0, 8.0], [c, *row]
        naive.append(sum((px[i + 1] - px[i]) * (py[i + 1] + py[i]) / 2 for i in range(3)))
    torch.testing.assert_close(area_with_clean_point(y, xs, clean), torch.tensor(naive, dtype=torch.float64))
    # a curve that already starts at 0 keeps its own first point
    xs0 = torch.tensor([0.0, 4.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(area_with_clean_point(y, xs0, clean), torch.trapezoid(y, xs0, dim=-1))
    # in square_block: the clean point is the accuracy on x itself
    model, x, labels, _, _ = batch
    r = square_block(model, x, labels, s_max=[4, 8], n_draws=2, seed=0)
    with torch.no_grad():
        clean_acc = (model(x).argmax(1) == labels).double()
    torch.testing.assert_close(r.clean_accuracy, clean_acc)
    expect = [(4 * (c + a0) / 2 + 4 * (a0 + a1) / 2) for c, (a0, a1) in zip(clean_acc.tolist(), r.accuracy.tolist())]
    torch.testing.assert_close(r.area_clean, torch.tensor(expect, dtype=torch.float64))
