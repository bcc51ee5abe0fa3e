"""The original study's other attribution methods (DeepLift, DeepLiftShap, LRP, KernelShap, Occlusion,
GradCAM): each equals Captum called image by image on the same inputs, is deterministic under its seed,
runs through every metric of evaluate_model, and refuses bad input in one line."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from captum.attr import (
    LRP, DeepLift, DeepLiftShap, KernelShap, LayerAttribution, LayerGradCam, Occlusion,
)
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn

from evaluation.attributions import METHODS, attribute
from evaluation.captum_methods import draw_baselines, lrp_rules
from evaluation.evaluate import evaluate_model
from evaluation.metrics import registry
from foundations import seeds
from trainables.models import BatchNorm2d, build_model

N = 4
CLOSE = dict(rtol=1e-4, atol=1e-6)
SMALL = {"kernel_shap": {"superpixel": 7, "n_samples": 40}, "occlusion": {"window": 7, "stride": 7},
         "deeplift_shap": {"n_baselines": 4}}


@pytest.fixture(scope="module")
def images(batch, mnist):
    model, x, _, t, _ = batch
    base = draw_baselines(mnist.train_x, 4, seed=3)
    return model, x[:N], t[:N], base


def _per_image(fn, x, t):
    return torch.cat([fn(x[i : i + 1], t[i : i + 1], i).detach() for i in range(len(x))])


def _captum_reference(method, model, base):
    """Captum called on one image (i: its position), independently of evaluation.captum_methods."""
    if method == "deeplift":
        return lambda xi, ti, i: DeepLift(model).attribute(xi, baselines=0.0, target=ti)
    if method == "deeplift_shap":
        return lambda xi, ti, i: DeepLiftShap(model).attribute(xi, baselines=base, target=ti)
    if method == "occlusion":
        return lambda xi, ti, i: Occlusion(model).attribute(
            xi, sliding_window_shapes=(1, 7, 7), strides=(1, 7, 7), baselines=0.0, target=ti)
    if method == "grad_cam":
        return lambda xi, ti, i: LayerAttribution.interpolate(
            LayerGradCam(model, model[0]).attribute(xi, target=ti), (28, 28))
    if method == "lrp":
        def lrp(xi, ti, i):
            twin = copy.deepcopy(model)
            for m in twin.modules():
                if isinstance(m, (nn.Flatten, BatchNorm2d)):  # Captum's epsilon rule, set by hand
                    m.rule = EpsilonRule()
            return LRP(twin).attribute(xi, target=ti)
        return lrp
    if method == "kernel_shap":
        mask = torch.arange(16).view(1, 1, 4, 4).repeat_interleave(7, 2).repeat_interleave(7, 3)

        def ks(xi, ti, i):
            with torch.random.fork_rng():
                torch.manual_seed(seeds.mix(5, i, bits=62))
                return KernelShap(model).attribute(xi, baselines=0.0, target=ti, feature_mask=mask, n_samples=40)
        return ks
    raise AssertionError(method)


@pytest.mark.parametrize("method", ["deeplift", "deeplift_shap", "lrp", "kernel_shap", "occlusion", "grad_cam"])
def test_each_new_method_equals_captum_per_image_and_is_deterministic(images, method):
    model, x, t, base = images
    kw = dict(seed=5, baselines=base, **SMALL.get(method, {}))
    batched = attribute(model, x, t, method, batch_size=64, **kw)
    ref = _per_image(_captum_reference(method, model, base), x, t)
    torch.testing.assert_close(batched, ref, **CLOSE)
    assert batched.abs().sum() > 0 and batched.shape == x.shape
    assert torch.equal(batched, attribute(model, x, t, method, batch_size=64, **kw))  # same seed, same maps
    torch.testing.assert_close(attribute(model, x, t, method, batch_size=2, **kw), batched, **CLOSE)  # chunks
    if method == "kernel_shap":
        assert not torch.equal(batched, attribute(model, x, t, method, **{**kw, "seed": 6}))


def test_kernel_shap_leaves_the_global_generator_alone(images):
    model, x, t, _ = images
    state = torch.random.get_rng_state()
    attribute(model, x[:1], t[:1], "kernel_shap", superpixel=14, n_samples=10)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_lrp_on_cnn4b_uses_captum_batchnorm_rule_and_leaves_the_model_untouched(images):
    _, x, t, _ = images
    torch.manual_seed(0)
    model = build_model("cnn4b").eval()
    for m in model.modules():
        if isinstance(m, BatchNorm2d):  # non-trivial running statistics
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    a = attribute(model, x, t, "lrp", batch_size=3)
    torch.testing.assert_close(a, _per_image(_captum_reference("lrp", model, None), x, t), **CLOSE)
    assert not any(hasattr(m, "rule") for m in model.modules())


def test_deeplift_shap_baselines_are_a_seeded_sample_of_the_given_images(mnist):
    a, b = draw_baselines(mnist.train_x, 5, 1), draw_baselines(mnist.train_x, 5, 1)
    assert torch.equal(a, b) and a.shape == (5, 1, 28, 28) and a.dtype == torch.float32 and a.max() <= 1
    assert not torch.equal(a, draw_baselines(mnist.train_x, 5, 2))
    idx = seeds.subset(len(mnist.train_x), 5, 1)
    torch.testing.assert_close(a, mnist.train_x[idx].float()[:, None] / 255)


class _WithELU(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(1, 2, 3, padding=1), nn.ELU(), nn.Flatten(), nn.Linear(2 * 28 * 28, 10))


def test_bad_input_is_refused_in_one_line(images):
    model, x, t, _ = images
    with pytest.raises(ValueError) as e:
        attribute(_WithELU().eval(), x[:1], t[:1], "lrp")
    assert "\n" not in str(e.value) and "layer '1' (ELU) has no LRP rule" in str(e.value)
    with pytest.raises(ValueError, match=r"superpixel 5 does not tile .*valid choices: 1, 2, 4, 7, 14$"):
        attribute(model, x[:1], t[:1], "kernel_shap", superpixel=5)
    with pytest.raises(ValueError, match="valid choices: .*grad_cam"):
        attribute(model, x[:1], t[:1], "gradcam")
    with pytest.raises(ValueError, match="deeplift_shap: needs its baseline distribution"):
        attribute(model, x[:1], t[:1], "deeplift_shap")
    with pytest.raises(ValueError, match="n_baselines=16 images"):
        attribute(model, x[:1], t[:1], "deeplift_shap", baselines=torch.zeros(3, 1, 28, 28))
    with pytest.raises(ValueError, match="occlusion: window must be an integer in"):
        attribute(model, x[:1], t[:1], "occlusion", window=0)
    lrp_rules(build_model("cnn3b"))  # both of the project's models are supported
    lrp_rules(build_model("cnn4b"))


TINY_METRICS = {"morf": {"levels": 5}, "faithfulness": {"levels": 5, "n_subsets": 8},
                "gaussian": {"sigmas": [0.5], "n_draws": 2}, "square_block": {"s_max": [6], "n_draws": 2}}


@pytest.mark.parametrize("method", ["deeplift", "deeplift_shap", "lrp", "kernel_shap", "occlusion", "grad_cam"])
def test_every_metric_works_with_each_new_method(images, batch, method):
    model, x, t, base = images
    labels = batch[2][:N]
    df = evaluate_model(model, x[:3], labels[:3], methods=[method], n_samples=None, seed=1, metric_params=TINY_METRICS,
                        method_params={method: SMALL.get(method, {})}, baselines=base)
    own = df[df["method"] == method]
    expected = {o.name for g in registry.default_groups() for o in registry.REGISTRY[g].outputs if not o.model_level}
    assert set(own["metric"]) == expected
    assert np.isfinite(own["value"]).all()
    assert set(METHODS) >= {method}


def test_the_launcher_refuses_a_bad_method_or_mask_in_one_line_with_exit_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.ray_utils import ray_env

    repo = Path(__file__).resolve().parents[2]
    cases = [
        ("evaluation.methods=[saliency, gradcam]", "error: evaluation.methods: unknown value 'gradcam'; valid choices: "
         "saliency, integrated_gradients, input_x_gradient, smoothgrad, deeplift, deeplift_shap, lrp, kernel_shap, "
         "occlusion, grad_cam, random"),
        ("evaluation.method_params.kernel_shap.superpixel=5", "error: evaluation.method_params.kernel_shap: "
         "kernel_shap: superpixel 5 does not tile the 28x28 image into squares; valid choices: 1, 2, 4, 7, 14"),
    ]
    for override, message in cases:
        r = subprocess.run([sys.executable, "-m", "study.launch", "--config", "quick", "--output", str(tmp_path / "o"),
                            "--set", override], cwd=repo, env=ray_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip() == message
    assert not (tmp_path / "o").exists()
