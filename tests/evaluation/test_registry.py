"""The metric registry (evaluation/metrics/registry.py): one torch-free description per metric."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.metrics import METRICS, registry
from evaluation.metrics.registry import REGISTRY, MetricSpec, Output

REPO = Path(__file__).resolve().parents[2]


def test_analysis_report_config_and_registry_import_no_torch():
    code = ("import json, sys; "
            "import evaluation.metrics.registry, study.analysis, study.report, foundations.schemas; "
            "heavy = ('torch', 'captum', 'torchvision'); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_every_direction_the_study_reports():
    from study import analysis

    expected = {
        "accuracy": True, "test_acc": True, "test_accuracy": True, "val_acc": True, "val_morf": True,
        "morf": True, "morf_curve": None, "faithfulness_nested": True, "faithfulness_correlation": True,
        "complexity": False, "gaussian_accuracy": True, "gaussian_auc": True, "gaussian_auc_clean": True,
        "max_sensitivity": False, "avg_sensitivity": False, "block_accuracy": True, "block_auc": True,
        "block_auc_clean": True, "block_infidelity": False, "block_infidelity_raw": False,
        "roar": False, "roar_clean": False, "mprt_spearman": False, "mprt_ssim": False,
        # the groups themselves (and names built on them)
        "faithfulness": True, "gaussian": True, "square_block": True, "faithfulness_other": True, "mprt": False,
    }
    for metric, hib in expected.items():
        assert analysis.higher_is_better(metric) is hib, metric
    assert analysis.higher_is_better("no_such_metric") is None
    assert analysis.directions() == registry.directions()


def test_the_modules_constants_are_the_registrys():
    from evaluation import evaluate, roar
    from evaluation.metrics import complexity, faithfulness, gaussian, morf, mprt, square_block

    for mod in (morf, faithfulness, complexity, gaussian, square_block, mprt, roar):
        spec = REGISTRY[mod.NAME]
        assert mod.SPEC is spec and mod.HIGHER_IS_BETTER is spec.higher_is_better
        assert getattr(mod, "OUTPUTS", spec.directions()) == spec.directions()
        assert mod.REFERENCE == "; ".join(spec.references)
    assert METRICS == ("morf", "faithfulness", "complexity", "gaussian", "square_block")  # the defaults
    assert registry.groups("evaluate") == (*METRICS, "mprt") and REGISTRY["mprt"].opt_in  # valid, computed if named
    assert evaluate.HIGHER_IS_BETTER == {o: v.higher_is_better for o, v in registry.outputs("evaluate").items()}
    assert evaluate.CURVE_X == {
        "morf_curve": "fraction removed", "gaussian_accuracy": "sigma", "max_sensitivity": "sigma",
        "avg_sensitivity": "sigma", "block_accuracy": "s_max", "block_infidelity": "s_max",
        "block_infidelity_raw": "s_max", "mprt_spearman": "layer", "mprt_ssim": "layer"}
    assert roar.FRACTIONS == (0.1, 0.3, 0.5, 0.7, 0.9)


def test_parameter_defaults_match_the_functions():
    from evaluation.metrics import faithfulness, gaussian, morf, square_block

    functions = {"morf": morf.morf, "faithfulness": faithfulness.faithfulness, "gaussian": gaussian.gaussian,
                 "square_block": square_block.square_block}
    for name in METRICS:
        spec = REGISTRY[name]
        assert callable(spec.rows_function()), name
        if not spec.params:
            continue
        sig = inspect.signature(functions[name]).parameters
        for p, default in spec.params.items():
            assert sig[p].default == default, (name, p)


def test_labels_of_the_report_come_from_the_registry():
    from study import document

    assert document.METRIC_LABELS == registry.labels()
    assert document.metric_label("block_infidelity_raw") == "block infidelity (raw, scale-dependent)"
    assert document.metric_label("gaussian_auc_clean") == "noise AUC"
    assert document.metric_label("roar_clean") == "ROAR area"
    assert document.metric_label("morf_curve") == "morf curve"  # no label given: the name


def test_config_validation_reads_the_registry():
    from study.config import ConfigError, Evaluation

    Evaluation(metric_params={"gaussian": {"n_draws": 2}})
    with pytest.raises(ConfigError, match="n_draws"):
        Evaluation(metric_params={"complexity": {"n_draws": 2}})
    with pytest.raises(ConfigError, match="square_block"):
        Evaluation(metrics=["morf", "no_such_group"])


def test_register_rejects_duplicates_and_bad_specs():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(MetricSpec("morf", (Output("x_new", True),), True, rows="m:f"))
    with pytest.raises(ValueError, match="already reported"):
        registry.register(MetricSpec("new_group", (Output("morf", True),), True, rows="m:f"))
    with pytest.raises(ValueError, match="rows function"):
        MetricSpec("new_group", (Output("x_new", True),), True)  # stage evaluate needs its rows
    assert "new_group" not in REGISTRY


def mean_intensity_rows(inp):
    """A metric defined in this test: the attributions' mean per image, and its per-level twin."""
    v = inp.attributions.flatten(1).double().mean(1).cpu()
    return [("mean_intensity", v, None), ("mean_intensity_curve", torch.stack([v, 2 * v], 1),
                                          torch.tensor([1.0, 2.0], dtype=torch.float64))]


def test_a_new_metric_is_its_function_plus_one_registration(monkeypatch):
    from evaluation.evaluate import evaluate_model
    from trainables.models import build_model

    monkeypatch.setitem(REGISTRY, "mean_intensity", MetricSpec(
        "mean_intensity", (Output("mean_intensity", False, "mean intensity"),
                           Output("mean_intensity_curve", None, level="scale")),
        False, params={}, rows=f"{__name__}:mean_intensity_rows"))
    torch.manual_seed(0)
    model = build_model("cnn3b").eval()
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    df = evaluate_model(model, x, y, methods=["saliency"], metrics=["complexity", "mean_intensity"], n_samples=None)
    assert set(df["metric"]) == {"complexity", "complexity_seed", "mean_intensity", "mean_intensity_curve"}
    assert sorted(df.loc[df["metric"] == "mean_intensity_curve", "level"].unique().tolist()) == [1.0, 2.0]
    assert registry.directions()["mean_intensity"] is False
    assert registry.curve_axes()["mean_intensity_curve"] == "scale"
