"""Study configuration: presets load, overrides apply, every kind of bad value is named."""

from __future__ import annotations

import pytest

from study.config import PRESETS, ConfigError, StudyConfig, dump_config, load_config
from trainables.penalties import PENALTIES
from trainables.train import TrainConfig


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_make_valid_train_configs(preset, tmp_path):
    cfg = load_config(preset)
    assert cfg.name == preset
    assert set(cfg.penalties) == set(PENALTIES) and "none" in cfg.penalties
    for ds in cfg.datasets:
        for p in cfg.penalties:
            TrainConfig(**cfg.train_config(ds, p))  # the trial's fixed part is a valid TrainConfig
    # the dump reads back to the same config
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_preset_contents():
    quick, paper = load_config("quick"), load_config("paper")
    assert quick.epochs == 1 and quick.trials >= 2
    # quick trains the cheap cnn3b everywhere; paper keeps docs/spec.md §2's per-dataset models (model '' = default)
    assert quick.for_dataset("fashion-mnist", "model") == "cnn3b" and paper.for_dataset("fashion-mnist", "model") == ""
    assert (paper.batch_size, paper.epochs, paper.data_fraction, paper.lr) == (30, 8, 1.0, 1e-3)
    lo, hi = paper.space_for("gradient").lam
    assert lo < 0.1 < hi
    assert load_config("full").resources.gpu > 0
    assert load_config(None) == StudyConfig()  # no file: dataclass defaults


def test_overrides():
    cfg = load_config("quick", ["trials=20", "datasets=[mnist]", "space.gradient.lam=[0.001, 10]",
                                "space.default.lr=[1e-4, 1e-2]", "resources.cpu=2", "lr=1e-4",
                                "per_dataset.mnist.epochs=3", "evaluation.roar.repeats=5"])
    assert cfg.trials == 20 and cfg.datasets == ["mnist"] and cfg.lr == 1e-4
    assert cfg.space_for("gradient").lam == [0.001, 10.0]
    assert cfg.space_for("gradient").lr == [1e-4, 1e-2]  # inherited from space.default
    assert cfg.space_for("smoothness").lam == [0.01, 1.0]
    assert cfg.resources.cpu == 2.0 and cfg.for_dataset("mnist", "epochs") == 3
    assert cfg.evaluation.roar.repeats == 5
    assert cfg.train_config("mnist", "none")["epochs"] == 3


@pytest.mark.parametrize(
    "override, key, hint",
    [
        ("trials=-1", "trials", ">= 1"),
        ("trials=abc", "trials", "integer"),
        ("trials=2.5", "trials", "integer"),
        ("trialz=3", "trialz", "valid keys: name"),
        ("penalties=[]", "penalties", "must not be empty"),
        ("penalties=[none, lasso]", "penalties", "valid choices: none, gradient"),
        ("datasets=[cifar10]", "datasets", "valid choices: mnist, fashion-mnist"),
        ("space.gradient.lam=[1.0, 0.1]", "space.gradient.lam", "low must be < high"),
        ("space.gradient.lam=[0, 1]", "space.gradient.lam", "> 0"),
        ("space.lasso.lam=[0.1, 1]", "space.lasso", "valid keys: default"),
        ("space.gradient.mu=[1, 2]", "space.gradient.mu", "valid keys: lam, lr"),
        ("data_fraction=0", "data_fraction", "(0, 1]"),
        ("per_dataset.fashion-mnist.data_fraction=1.5", "per_dataset.fashion-mnist.data_fraction", "(0, 1]"),
        ("per_dataset.svhn.epochs=1", "per_dataset.svhn", "valid choices"),
        ("resources.gpu=-0.5", "resources.gpu", ">= 0"),
        ("resources=4", "resources", "mapping"),
        ("objective=accuracy", "objective", "valid choices: multi, val_acc, val_morf"),
        ("sampler=grid", "sampler", "valid choices: tpe, nsga2, random"),
        ("tolerance=2", "tolerance", "[0, 1)"),
        ("penalty_params.fidelity.q=1", "penalty_params.fidelity", "valid: m"),
        ("evaluation.methods=[lime]", "evaluation.methods", "valid choices: saliency"),
        ("evaluation.roar.fractions=[0.5, 1.0]", "evaluation.roar.fractions", "(0, 1)"),
        ("evaluation.n_samples=0", "evaluation.n_samples", ">= 1"),
        ("max_concurrent_trials=0", "max_concurrent_trials", ">= 1"),
    ],
)
def test_bad_values_name_the_key(override, key, hint):
    with pytest.raises(ConfigError) as e:
        load_config("quick", [override])
    msg = str(e.value)
    assert msg.startswith(key + ":"), msg
    assert hint in msg, msg


def test_bad_override_syntax_and_files(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("quick", ["trials"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config("quick", ["trials.x=1"])
    with pytest.raises(ConfigError, match="not found; presets: quick, paper, full"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trials: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_direct_construction_is_validated():
    with pytest.raises(ConfigError, match="^trials:"):
        StudyConfig(trials=0)
    with pytest.raises(ConfigError, match="^datasets: unknown value 'svhn'"):
        StudyConfig(datasets=["svhn"])
