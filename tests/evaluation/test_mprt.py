"""MPRT (evaluation/metrics/mprt.py): equality with quantus.MPRT, seeding, analytic cases, bad input.

Small on purpose: randomly initialised models (a fixed torch seed), 6 real MNIST test images.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from evaluation.attributions import attribute
from evaluation.metrics import METRICS, registry
from evaluation.metrics._common import MetricInput
from evaluation.metrics.mprt import average_ranks, layers, mprt, rows, spearman, ssim_flat
from foundations.data import to_float
from trainables.models import build_model

N = 6
SEED = 5


@pytest.fixture(scope="module")
def images(mnist):
    torch.set_num_threads(1)
    return to_float(mnist.test_x[:N])


def setup(name: str, x: torch.Tensor, method: str = "saliency"):
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():
        t = model(x).argmax(1)
    return model, t, attribute(model, x, t, method, seed=SEED)


def quantus_mprt(model, x, t, a, similarity, **kwargs) -> dict[str, np.ndarray]:
    """quantus.MPRT's per-layer, per-image scores with our saliency as its explain_func (layer -> (B,))."""
    quantus = pytest.importorskip("quantus")

    def explain(model, inputs, targets, **_):
        return attribute(model, torch.as_tensor(inputs), torch.as_tensor(targets), "saliency").numpy()

    metric = quantus.MPRT(seed=SEED, similarity_func=similarity, layer_order="top_down", disable_warnings=True,
                          display_progressbar=False, **kwargs)
    out = metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(), explain_func=explain,
                 device="cpu")
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items() if k != "original"}


def quantus_ssim(a, b, batched=False, **kwargs):
    # Quantus 0.6.0's ssim returns a list when batched and MPRT calls .tolist() on it: an array, the same values
    from quantus.functions.similarity_func import ssim

    return np.asarray(ssim(a, b, batched=batched, **kwargs))


@pytest.mark.parametrize("name", ["cnn3b", "cnn4b"])
def test_equals_quantus_per_layer_and_image(images, name):
    from quantus.functions.similarity_func import correlation_spearman

    model, t, a = setup(name, images)
    ours = mprt(model, images, t, a, method="saliency", seed=SEED)
    assert ours.spearman.shape == ours.ssim.shape == (N, len(ours.layers))
    assert ours.levels.tolist() == list(range(1, len(ours.layers) + 1))
    # Quantus' defaults: Spearman ignores the scale, so its batch-wide max normalisation changes nothing
    q = quantus_mprt(model, images, t, a, correlation_spearman)
    assert tuple(q) == ours.layers  # the same layers in the same (top-down) order
    np.testing.assert_allclose(ours.spearman.numpy(), np.stack(list(q.values()), 1), atol=1e-9, rtol=0)
    # SSIM: each map normalised by its own max (Quantus' normalise_by_max over the image's axes)
    q = quantus_mprt(model, images, t, a, quantus_ssim, normalise_func_kwargs={"normalise_axes": [1, 2, 3]})
    np.testing.assert_allclose(ours.ssim.numpy(), np.stack(list(q.values()), 1), atol=1e-6, rtol=0)
    # ... which is Quantus' default normalisation when it is given one image
    q = quantus_mprt(model, images[:1], t[:1], a[:1], quantus_ssim)
    np.testing.assert_allclose(ours.ssim[0].numpy(), np.concatenate(list(q.values())), atol=1e-6, rtol=0)
    assert np.isfinite(ours.spearman.numpy()).all() and np.isfinite(ours.ssim.numpy()).all()


def test_seeded_and_the_callers_model_and_rng_untouched(images):
    model, t, a = setup("cnn3b", images)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    r1 = mprt(model, images, t, a, method="saliency", seed=SEED)
    r2 = mprt(model, images, t, a, method="saliency", seed=SEED)
    other = mprt(model, images, t, a, method="saliency", seed=SEED + 1)
    assert torch.equal(r1.spearman, r2.spearman) and torch.equal(r1.ssim, r2.ssim)
    assert not torch.equal(r1.spearman, other.spearman) and not torch.equal(r1.ssim, other.ssim)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_linear_model_has_the_answer_known_without_quantus(images):
    """One layer: the randomised model's saliency towards t is |W'[t]| with W' = torch's default init after
    torch.manual_seed(seed + 1); the original is |W[t]|. Spearman from scipy, per image."""
    from scipy.stats import spearmanr

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    t = torch.tensor([0, 3, 3, 7, 9, 1])
    a = attribute(model, images, t, "saliency")
    torch.testing.assert_close(a.flatten(1), model[1].weight.detach()[t].abs())
    torch.manual_seed(SEED + 1)
    w = nn.Linear(784, 10).weight.detach()
    expected = [spearmanr(a[i].flatten().numpy(), w[t[i]].abs().numpy())[0] for i in range(N)]
    r = mprt(model, images, t, a, method="saliency", seed=SEED)
    assert r.layers == ("1",)
    np.testing.assert_allclose(r.spearman[:, 0].numpy(), expected, atol=1e-12, rtol=0)


def test_a_top_layer_that_only_rescales_the_map_changes_nothing(images):
    """Resetting a top BatchNorm1d (eval mode: y_c = w_c (z_c − μ_c)/σ_c + b_c, w_c > 0) only multiplies the
    saliency map of class c by a positive constant: after normalisation both similarities are 1 at level 1;
    randomising the Linear below then changes the map."""
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(10)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 3.0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), bn).eval()
    t = torch.arange(N)
    a = attribute(model, images, t, "saliency")
    r = mprt(model, images, t, a, method="saliency", seed=SEED)
    assert r.layers == ("2", "1")
    torch.testing.assert_close(r.spearman[:, 0], torch.ones(N, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(r.ssim[:, 0], torch.ones(N, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (r.spearman[:, 1].abs() < 0.2).all() and (r.ssim[:, 1] < 0.5).all()


def test_the_random_control_ignores_the_model(images):
    """``random`` maps come from the seed alone: the randomised model's maps are the same, similarity 1 (the
    attribution's seed defaults to the metric's). Drawn with another seed, they are independent: chance level."""
    model, t, a = setup("cnn3b", images, "random")
    r = mprt(model, images, t, a, method="random", seed=SEED)
    assert torch.equal(r.spearman, torch.ones(N, 3, dtype=torch.float64))
    assert torch.equal(r.ssim, torch.ones(N, 3, dtype=torch.float64))
    r = mprt(model, images, t, a, method="random", seed=SEED, attribute_kwargs={"seed": SEED + 1})
    assert (r.spearman.abs() < 4 / 784**0.5).all() and (r.ssim.abs() < 0.2).all()


def test_ranks_and_similarities_against_scipy_and_skimage():
    from scipy.stats import rankdata, spearmanr
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 50), generator=g).float()  # many ties
    b = torch.rand(4, 50, generator=g)
    np.testing.assert_array_equal(average_ranks(a).numpy(), rankdata(a.numpy(), axis=1))
    np.testing.assert_allclose(spearman(a, b).numpy(), [spearmanr(a[i], b[i])[0] for i in range(4)], atol=1e-12)
    assert spearman(torch.ones(1, 50), b[:1]).item() == 0.0  # constant side: 0, not NaN
    expected = [structural_similarity(a[i].numpy(), b[i].numpy(), data_range=float(torch.cat([a[i], b[i]]).max()
                                      - torch.cat([a[i], b[i]]).min())) for i in range(4)]
    np.testing.assert_allclose(ssim_flat(a, b).numpy(), expected, atol=1e-6, rtol=0)
    assert ssim_flat(torch.zeros(2, 50), torch.zeros(2, 50)).tolist() == [1.0, 1.0]


def test_rows_and_evaluate_model(images):
    from evaluation.evaluate import evaluate_model

    model, t, a = setup("cnn3b", images)
    fn = functools.partial(attribute, model, method="saliency", seed=SEED)
    out = rows(MetricInput(model, images, t, t, a, fn, seed=SEED, method="saliency", attribute_kwargs={"seed": SEED}))
    assert [(name, tuple(v.shape), lv.tolist()) for name, v, lv in out] == [
        ("mprt_spearman", (N, 3), [1.0, 2.0, 3.0]), ("mprt_ssim", (N, 3), [1.0, 2.0, 3.0])]
    df = evaluate_model(model, images[:3], t[:3], methods=["saliency", "random"], metrics=["mprt"], n_samples=None,
                        seed=SEED)
    assert set(df["metric"]) == {"mprt_spearman", "mprt_ssim"}
    assert sorted(df["level"].unique().tolist()) == [1.0, 2.0, 3.0]
    per = df[df["sample"] >= 0]
    assert len(per) == 2 * 2 * 3 * 3 and per["value"].notna().all()
    assert (per.loc[per["method"] == "random", "value"] == 1.0).all()
    np.testing.assert_allclose(per[(per["method"] == "saliency") & (per["metric"] == "mprt_spearman")]
                               .sort_values(["sample", "level"])["value"].to_numpy(),
                               out[0][1][:3].reshape(-1).numpy(), atol=1e-9, rtol=0)
    assert "mprt" in registry.groups("evaluate") and "mprt" not in METRICS  # opt-in


def test_bad_input(images):
    model, t, a = setup("cnn3b", images[:2])
    x = images[:2]
    with pytest.raises(ValueError, match="no layer to randomise") as e:
        mprt(nn.Sequential(nn.Flatten()), x, t, a, method="saliency")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no layer to randomise"):
        layers(nn.ReLU())
    with pytest.raises(ValueError, match="unknown attribution method 'lime'"):
        mprt(model, x, t, a, method="lime")
    with pytest.raises(ValueError, match="shape of x"):
        mprt(model, x, t, a[:, :, :27], method="saliency")
    fn = functools.partial(attribute, model, method="saliency")
    with pytest.raises(ValueError, match="MetricInput.method"):
        rows(MetricInput(model, x, t, t, a, fn))
    with pytest.raises(ValueError, match="d >= 7"):
        ssim_flat(torch.zeros(1, 5), torch.zeros(1, 5))


class _EdgeEnergy(nn.Module):
    """f(x) = W · Σ (k ∗ x)² + b, with k a fixed Laplacian edge filter (a buffer, not a layer): the Saliency
    map |W_t| · |2 kᵀ ∗ (k ∗ x)| is an edge map whose shape ignores the only layer's weights."""

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("k", k.view(1, 1, 3, 3))
        self.head = nn.Linear(1, 10)

    def forward(self, x):
        energy = torch.nn.functional.conv2d(x, self.k, padding=1).pow(2).flatten(1).sum(1, keepdim=True)
        return self.head(energy)


def test_maps_that_ignore_the_weights_fail_it(images):
    """A fixed edge detector's maps stay the same when the model's weights are randomised: Spearman and SSIM 1
    (the test's verdict: not about the model), where a trained-like cnn3b's Saliency maps fall (above)."""
    torch.manual_seed(0)
    model = _EdgeEnergy().eval()
    with torch.no_grad():
        model.head.weight.uniform_(0.5, 1.5)  # (nonzero: a zero weight has no map to compare)
    t = torch.arange(N)
    a = attribute(model, images, t, "saliency")
    r = mprt(model, images, t, a, method="saliency", seed=SEED)
    assert r.layers == ("head",)
    assert (r.spearman > 0.999).all() and (r.ssim > 0.999).all(), (r.spearman, r.ssim)
