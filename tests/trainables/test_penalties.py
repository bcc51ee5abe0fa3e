"""Penalties (docs/spec.md §4): naive per-sample references, analytic cases, and trainability."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.models import build_model
from trainables.penalties import PENALTIES, Batch, penalty, resolve_penalty_params, rotate
from trainables.saliency import input_gradient

EPS = 1e-8


def naive_minmax(v):
    return (v - v.min()) / (v.max() - v.min() + EPS)


def naive_cos(a, b):
    return float((a @ b).detach()) / max(float((a.norm() * b.norm()).detach()), 1e-8)


def ctx_random(b=6, seed=0, y=None):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, 28, 28, generator=gen, dtype=torch.float64)
    g = torch.randn(b, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = torch.tensor(y if y is not None else [0, 1, 0, 2, 1, 0][:b])
    logits = torch.randn(b, 10, generator=gen, dtype=torch.float64)
    return Batch(model=None, x=x, y=y, logits=logits, g=g)


# ------------------------------------------------------------------ naive references
def test_gradient_matches_naive():
    c = ctx_random()
    ref = sum(c.g[i].abs().sum() for i in range(len(c.g))) / c.g.numel()
    torch.testing.assert_close(penalty("gradient", c), ref)


@pytest.mark.parametrize("rule", ["label", "prediction"])
def test_consistency_matches_double_loop(rule):
    c = ctx_random()
    eps = 1e-3
    cls = c.y if rule == "label" else c.logits.argmax(1)
    total = 0.0
    b = len(c.x)
    for i in range(b):
        for j in range(i + 1, b):
            if cls[i] == cls[j]:
                gi, gj = naive_minmax(c.g[i].flatten()), naive_minmax(c.g[j].flatten())
                total += (1 - naive_cos(gi, gj)) / (1 - naive_cos(c.x[i].flatten(), c.x[j].flatten()) + eps)
    got = penalty("consistency", c, eps=eps, class_rule=rule)
    assert got.item() == pytest.approx(total / b, rel=1e-9, abs=1e-12)


def test_smoothness_matches_pixel_loop():
    c = ctx_random(b=2)
    g = c.g[:, 0].tolist()
    total = 0.0
    for s in range(2):
        for i in range(28):
            for j in range(28):
                if i + 1 < 28:
                    total += abs(g[s][i + 1][j] - g[s][i][j])
                if j + 1 < 28:
                    total += abs(g[s][i][j + 1] - g[s][i][j])
    assert penalty("smoothness", c).item() == pytest.approx(total / (2 * 28 * 28), rel=1e-12)


def test_locality_matches_naive():
    c = ctx_random()
    s = 0.01
    vals = []
    for i in range(len(c.x)):
        gh, x = naive_minmax(c.g[i]), c.x[i]
        vals.append(-(x * torch.log(gh + s) + (1 - x) * torch.log(1 - gh + s)).mean())
    torch.testing.assert_close(penalty("locality", c, s=s), torch.stack(vals).mean())


def _model_ctx(name="cnn3b", b=5, seed=0):
    torch.manual_seed(seed)
    model = build_model(name).double()
    if name == "cnn3b":
        model.train()
    x = torch.rand(b, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(b) % 10
    logits, g = input_gradient(model, x, y)
    return Batch(model, x, y, logits, g, torch.Generator().manual_seed(0))


def test_fidelity_matches_per_sample_loop():
    c = _model_ctx()
    m = 0.1
    cos = []
    for i in range(len(c.x)):
        xi = c.x[i : i + 1] * (1 - naive_minmax(c.g[i : i + 1]))
        cos.append(abs(naive_cos(c.model(c.x[i : i + 1])[0], c.model(xi)[0])))
    ref = max(0.0, sum(cos) / len(cos) - m)
    assert penalty("fidelity", c, m=m).item() == pytest.approx(ref, rel=1e-9, abs=1e-12)


def _tv_rotate(x, angle, interpolation):
    """The independent reference: torchvision's rotate (the seed's), or torch's exact isometries."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    iso = {"rot90": lambda t: torch.rot90(t, 1, dims=(2, 3)), "hflip": lambda t: torch.flip(t, dims=(3,))}
    if angle in iso:
        return iso[angle](x)
    return TF.rotate(x, float(angle), interpolation=InterpolationMode(interpolation))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("angle", [10.0, "rot90", "hflip"])
def test_symmetry_matches_per_sample_loop(angle, interpolation):
    c = _model_ctx()
    vals = []
    for i in range(len(c.x)):
        xi = c.x[i : i + 1]
        xr = _tv_rotate(xi, angle, interpolation).detach().requires_grad_(True)
        (g_rot_input,) = torch.autograd.grad(c.model(xr)[0, c.y[i]], xr)
        rot_g = _tv_rotate(c.g[i : i + 1], angle, interpolation)
        vals.append(1 - abs(naive_cos(rot_g.flatten(), g_rot_input.flatten())))
    got = penalty("symmetry", c, angles=(angle,), interpolation=interpolation)
    # torchvision's bilinear grid differs from torch.affine_grid's in the last float bits only
    tol = 1e-9 if interpolation == "nearest" or isinstance(angle, str) else 1e-5
    assert got.item() == pytest.approx(sum(vals) / len(vals), rel=tol, abs=1e-12)


def test_symmetry_default_is_the_seeds_nearest_rotation():
    """docs/spec.md §4: the seed rotates with torchvision's default (nearest); bilinear differs and is selectable."""
    assert resolve_penalty_params("symmetry")["interpolation"] == "nearest"
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for mode in ("nearest", "bilinear"):
        torch.testing.assert_close(rotate(x, 15.0, mode), _tv_rotate(x, 15.0, mode), atol=1e-5, rtol=0)
    assert (rotate(x, 15.0, "nearest") - rotate(x, 15.0, "bilinear")).abs().max() > 0.05
    with pytest.raises(ValueError, match="interpolation 'cubic'; valid choices: nearest, bilinear"):
        resolve_penalty_params("symmetry", {"interpolation": "cubic"})


# ------------------------------------------------------------------ analytic cases
def test_constant_map_has_zero_smoothness():
    c = ctx_random()
    c.g = torch.full_like(c.g, 3.7)
    assert penalty("smoothness", c).item() == 0.0


def test_identical_same_class_maps_have_zero_consistency():
    c = ctx_random(y=[4, 4, 4, 4, 4, 4])
    c.g = c.g[:1].expand_as(c.g).clone()
    assert penalty("consistency", c).item() == pytest.approx(0.0, abs=1e-12)
    c.y = torch.arange(6)  # no pair shares a class
    c.g = torch.randn_like(c.g)
    assert penalty("consistency", c).item() == 0.0


def test_gradient_l1_of_linear_model_is_mean_abs_weight():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).double()
    x, y = torch.rand(8, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (8,))
    logits, g = input_gradient(lin, x, y)
    w = lin[1].weight
    expected = torch.stack([w[yi].abs().mean() for yi in y]).mean()
    torch.testing.assert_close(penalty("gradient", Batch(lin, x, y, logits, g)), expected)
    lin_all = nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=False)).double()
    with torch.no_grad():
        lin_all[1].weight.copy_(lin_all[1].weight[:1].expand(10, -1))  # every class the same w
    logits, g = input_gradient(lin_all, x, y)
    torch.testing.assert_close(penalty("gradient", Batch(lin_all, x, y, logits, g)), lin_all[1].weight.abs().mean())


class RadialEnergy(nn.Module):
    """f_c(x) = a_c Σ x²: rotation-invariant, so g(x) = 2 a_y x is rotation-equivariant."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.linspace(0.5, 1.5, 10, dtype=torch.float64))

    def forward(self, x):
        return (x**2).sum((1, 2, 3))[:, None] * self.a[None, :]


@pytest.mark.parametrize("angle", ["rot90", "rot180", "hflip", 10.0])
def test_equivariant_model_has_zero_symmetry(angle):
    model = RadialEnergy()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    x[..., :4, :] = x[..., -4:, :] = x[..., :, :4] = x[..., :, -4:] = 0  # keep content inside the rotation
    y = torch.tensor([1, 2, 3, 4])
    logits, g = input_gradient(model, x, y)
    r = penalty("symmetry", Batch(model, x, y, logits, g, torch.Generator().manual_seed(0)), angles=(angle,))
    assert r.item() == pytest.approx(0.0, abs=1e-9)
    c = _model_ctx()  # a random CNN is not equivariant
    assert penalty("symmetry", c, angles=(angle,)).item() > 1e-3


def test_locality_at_perfect_binary_agreement():
    x = (torch.rand(3, 1, 28, 28, dtype=torch.float64) > 0.5).double()
    g = x * 5 - 2  # min-max normalises to x exactly
    c = Batch(None, x, torch.zeros(3, dtype=torch.long), torch.zeros(3, 10), g)
    assert penalty("locality", c, s=0.01).item() == pytest.approx(-math.log(1.01), rel=1e-6)


def test_fidelity_of_input_blind_model_is_one_minus_margin():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.uniform_(0.5, 1.0)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    logits = model(x)
    c = Batch(model, x, y, logits, torch.randn_like(x))
    assert penalty("fidelity", c, m=0.1).item() == pytest.approx(0.9, abs=1e-9)
    assert penalty("fidelity", c, m=1.0).item() == 0.0


def test_rotate_isometries_are_exact_and_small_angles_invertible():
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(rotate(rotate(x, "rot90"), "rot270"), x)
    assert torch.equal(rotate(rotate(x, "hflip"), "hflip"), x)
    assert torch.allclose(rotate(x.double(), 0.0), x.double(), atol=1e-12)


# ------------------------------------------------------------------ trainability and validation
@pytest.mark.parametrize("model_name", ["cnn3b", "cnn4b"])
@pytest.mark.parametrize("name", [p for p in PENALTIES if p != "none"])
def test_parameter_gradient_is_finite_and_nonzero(model_name, name, mnist):
    from foundations.data import to_float

    torch.manual_seed(0)
    model = build_model(model_name).train()
    x, y = to_float(mnist.train_x[:16]), mnist.train_y[:16]
    logits, g = input_gradient(model, x, y)
    r = penalty(name, Batch(model, x, y, logits, g, torch.Generator().manual_seed(0)))
    grads = torch.autograd.grad(r, [p for p in model.parameters()], allow_unused=True)
    flat = torch.cat([gr.flatten() for gr in grads if gr is not None])
    assert torch.isfinite(flat).all()
    assert flat.abs().sum() > 0, f"{name} does not train {model_name}"


def test_parameter_validation():
    assert resolve_penalty_params("locality") == {"s": 0.01}
    assert resolve_penalty_params("fidelity", {"m": 0.2}) == {"m": 0.2}
    with pytest.raises(ValueError, match="valid: m"):
        resolve_penalty_params("fidelity", {"margin": 0.2})
    with pytest.raises(ValueError, match="class_rule 'majority'; valid: label, prediction"):
        resolve_penalty_params("consistency", {"class_rule": "majority"})
    with pytest.raises(ValueError, match="angle 'rot45'"):
        resolve_penalty_params("symmetry", {"angles": ["rot45"]})
    with pytest.raises(ValueError, match="valid choices: none, gradient"):
        resolve_penalty_params("sparsity")
