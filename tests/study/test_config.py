"""Study configuration: presets load, overrides apply, every kind of bad value is named."""

from __future__ import annotations

import pytest

from study.config import PRESETS, ConfigError, Search, StudyConfig, dump_config, load_config
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
    assert quick.training.epochs == 1 and quick.search.trials >= 2
    # quick trains the cheap cnn3b everywhere; paper keeps docs/spec.md §2's per-dataset models (model '' = default)
    assert quick.for_dataset("fashion-mnist", "model") == "cnn3b" and paper.for_dataset("fashion-mnist", "model") == ""
    t = paper.training
    assert (t.batch_size, t.epochs, t.data_fraction, t.lr) == (30, 8, 1.0, 1e-3)
    lo, hi = paper.space_for("gradient").lam
    assert lo < 0.1 < hi
    assert load_config("full").resources.gpu > 0
    assert load_config(None) == StudyConfig()  # no file: dataclass defaults


def test_overrides():
    cfg = load_config("quick", ["trials=20", "datasets=[mnist]", "space.gradient.lam=[0.001, 10]",
                                "space.default.lr=[1e-4, 1e-2]", "resources.cpu=2", "lr=1e-4",
                                "per_dataset.mnist.epochs=3", "evaluation.roar.repeats=5"])
    assert cfg.search.trials == 20 and cfg.datasets == ["mnist"] and cfg.training.lr == 1e-4
    assert cfg.space_for("gradient").lam == [0.001, 10.0]
    assert cfg.space_for("gradient").lr == [1e-4, 1e-2]  # inherited from space.default
    assert cfg.space_for("smoothness").lam == [0.01, 1.0]
    assert cfg.resources.cpu == 2.0 and cfg.for_dataset("mnist", "epochs") == 3
    assert cfg.evaluation.roar.repeats == 5
    assert cfg.train_config("mnist", "none")["epochs"] == 3


@pytest.mark.parametrize(
    "override, key, hint",
    [
        ("search.trials=-1", "search.trials", ">= 1"),
        ("search.trials=abc", "search.trials", "integer"),
        ("trials=2.5", "search.trials", "integer"),  # the flat name of older versions
        ("trialz=3", "trialz", "valid keys: name"),
        ("penalties=[]", "penalties", "must not be empty"),
        ("penalties=[none, lasso]", "penalties", "valid choices: none, gradient"),
        ("datasets=[cifar10]", "datasets", "valid choices: mnist, fashion-mnist"),
        ("search.space.gradient.lam=[1.0, 0.1]", "search.space.gradient.lam", "low must be < high"),
        ("search.space.gradient.lam=[0, 1]", "search.space.gradient.lam", "> 0"),
        ("search.space.lasso.lam=[0.1, 1]", "search.space.lasso", "valid keys: default"),
        ("search.space.gradient.mu=[1, 2]", "search.space.gradient.mu", "valid keys: lam, lr"),
        ("training.data_fraction=0", "training.data_fraction", "(0, 1]"),
        ("per_dataset.fashion-mnist.data_fraction=1.5", "per_dataset.fashion-mnist.data_fraction", "(0, 1]"),
        ("per_dataset.svhn.epochs=1", "per_dataset.svhn", "valid choices"),
        ("resources.gpu=-0.5", "resources.gpu", ">= 0"),
        ("resources=4", "resources", "mapping"),
        ("search.objective=accuracy", "search.objective", "valid choices: multi, val_acc, val_morf"),
        ("search.sampler=grid", "search.sampler", "valid choices: tpe, nsga2, random"),
        ("search.tolerance=2", "search.tolerance", "[0, 1)"),
        ("penalty_params.fidelity.q=1", "penalty_params.fidelity", "valid: m"),
        ("evaluation.methods=[lime]", "evaluation.methods", "valid choices: saliency"),
        ("evaluation.roar.fractions=[0.5, 1.0]", "evaluation.roar.fractions", "(0, 1)"),
        ("evaluation.n_samples=0", "evaluation.n_samples", ">= 1"),
        ("search.max_concurrent_trials=0", "search.max_concurrent_trials", ">= 1"),
        ("training.penalty=gradient", "training.penalty", "set by the study for each trial"),
        ("training.epochz=2", "training.epochz", "valid keys: dataset"),
        ("per_dataset.mnist.sampler=tpe", "per_dataset.mnist.sampler", "valid keys: optimizer"),
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
        Search(trials=0)
    with pytest.raises(ConfigError, match="^datasets: unknown value 'svhn'"):
        StudyConfig(datasets=["svhn"])


# A study folder saved by the flat configuration of older versions (every key at the top level,
# per_dataset listing every key with nulls): it must still load, resume and compare equal.
OLD_FLAT = """\
name: quick
output: /somewhere/outputs/quick
data_root: /somewhere/data
datasets: [mnist, fashion-mnist]
penalties: [none, gradient, consistency, smoothness, locality, fidelity, symmetry]
space:
  default: {lam: [0.01, 1.0], lr: null}
penalty_params: {}
trials: 2
epochs: 1
batch_size: 30
lr: 0.001
optimizer: adam
data_fraction: 0.05
val_fraction: 0.1
split_seed: 0
val_limit: 2000
per_dataset:
  fashion-mnist: {data_fraction: null, val_limit: null, explain_n: null, epochs: null, batch_size: null,
                  model: cnn3b}
seed: 0
objective: multi
sampler: tpe
scheduler: asha
resources: {cpu: 1.0, gpu: 0.0}
max_concurrent_trials: 2
schedule: concurrent
max_concurrent_searches: 0
max_concurrent_total: 0
max_failures: 1
tolerance: 0.01
explain_n: 100
morf_levels: 20
"""


def test_a_saved_config_of_the_flat_form_loads_into_sections_and_keeps_its_search(tmp_path):
    from study.config import config_from_raw, read_saved

    (tmp_path / "config.yaml").write_text(OLD_FLAT)
    old = config_from_raw(read_saved(str(tmp_path)))
    assert old.search.trials == 2 and old.training.epochs == 1 and old.search.explain_n == 100
    assert old.for_dataset("fashion-mnist", "model") == "cnn3b"
    quick = load_config("quick", ["evaluation.n_samples=99"])  # evaluation may differ: not part of the search
    assert old.search_key() == quick.search_key()
    for ds in old.datasets:
        for p in old.penalties:
            a, b = old.train_config(ds, p), quick.train_config(ds, p)
            assert {k: v for k, v in a.items() if k != "data_root"} == {k: v for k, v in b.items() if k != "data_root"}
    # the flat override names of older versions still reach their sections
    assert load_config("quick", ["trials=5", "epochs=3"]).search.trials == 5
    with pytest.raises(ConfigError, match="^trials: given twice"):
        config_from_raw({"trials": 2, "search": {"trials": 3}})


def test_what_may_change_on_resume_comes_from_the_sections():
    """The search key holds every field not marked RUNTIME: the whole resources and evaluation sections
    and the concurrency/tolerance keys of search may change; a training or search-space key may not."""
    base = load_config("quick").search_key()
    for runtime in ("resources.cpu=2", "search.max_concurrent_trials=4", "search.tolerance=0.05",
                    "search.schedule=sequential", "evaluation.n_samples=7", "search.max_failures=3"):
        assert load_config("quick", [runtime]).search_key() == base, runtime
    for identity in ("training.epochs=2", "training.batch_norm=constant", "search.trials=3",
                     "search.space.default.lam=[0.1, 1]", "seed=1", "per_dataset.mnist.epochs=2"):
        key = load_config("quick", [identity]).search_key()
        assert key != base, identity
    assert "training.epochs" in base and "training.dataset" not in base and "resources" not in base
