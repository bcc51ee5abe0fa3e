"""What a training run is made of, without torch: names, defaults, checks and :class:`TrainConfig`.

The one definition of the training settings and of their validity. The training loop
(:mod:`trainables.train`), the penalties (:mod:`trainables.penalties`) and the models
(:mod:`trainables.models`) read their names and defaults from here; so does the study's
configuration (:mod:`study.config`), which validates its training keys with the same checks and
builds each trial's :class:`TrainConfig`, so that loading a config (``python -m study.launch
--cluster …`` on a laptop) never imports torch.

Every check raises :class:`ConfigError` (a ``ValueError``) worded ``<key>: <what is wrong>[; valid
choices: …]``; the study prefixes its dotted key path (``per_dataset.mnist.epochs``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from foundations import data as data_mod

MODELS = ("cnn3b", "cnn4b")
DEFAULT_MODEL = {"mnist": "cnn3b", "fashion-mnist": "cnn4b"}
OPTIMIZERS = ("adam", "sgd")
BATCH_NORMS = ("standard", "constant")
DEVICES = ("auto", "cpu", "cuda")

# ------------------------------------------------------------------------- the penalties' parameters
ISOMETRIES = ("rot90", "rot180", "rot270", "hflip", "vflip")
CLASS_RULES = ("label", "prediction")
INTERPOLATIONS = ("nearest", "bilinear")

PENALTY_DEFAULTS: MappingProxyType = MappingProxyType(
    {  # name -> its hyper-parameters with their defaults (docs/spec.md §4); the functions: trainables/penalties.py
        "none": {},
        "gradient": {},
        "consistency": {"eps": 1e-3, "class_rule": "label"},
        "smoothness": {},
        "locality": {"s": 0.01},
        "fidelity": {"m": 0.1},
        "symmetry": {"angles": (5.0, 10.0, 15.0, 20.0), "interpolation": "nearest"},
    }
)
PENALTY_NAMES = tuple(PENALTY_DEFAULTS)
MEASURED_PENALTIES = tuple(p for p in PENALTY_NAMES if p != "none")  # measured on every model, every epoch
PENALTY_VALUE_COLUMNS = tuple(f"val_{p}" for p in MEASURED_PENALTIES)  # their columns in the epochs table


class ConfigError(ValueError):
    """A configuration value is invalid; the message names its key and the valid choices."""


def check_penalty(name: str) -> str:
    if name not in PENALTY_DEFAULTS:
        raise ConfigError(f"unknown penalty {name!r}; valid choices: {', '.join(PENALTY_NAMES)}")
    return name


def resolve_penalty_params(name: str, params: dict | None = None) -> dict:
    """Defaults of penalty ``name`` overridden by ``params``; unknown or invalid values are errors."""
    defaults = PENALTY_DEFAULTS[check_penalty(name)]
    params = dict(params or {})
    unknown = set(params) - set(defaults)
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ConfigError(f"penalty {name!r} has no parameter(s) {sorted(unknown)}; valid: {valid}")
    out = {**defaults, **params}
    _check_penalty_values(name, out)
    return out


def _check_penalty_values(name: str, p: dict) -> None:
    for key in ("eps", "s", "m"):
        if key in p and not (isinstance(p[key], (int, float)) and p[key] >= 0):
            raise ConfigError(f"penalty {name!r}: {key} must be a number >= 0, got {p[key]!r}")
    if "class_rule" in p and p["class_rule"] not in CLASS_RULES:
        raise ConfigError(f"penalty {name!r}: class_rule {p['class_rule']!r}; valid: {', '.join(CLASS_RULES)}")
    if "interpolation" in p and p["interpolation"] not in INTERPOLATIONS:
        raise ConfigError(
            f"penalty {name!r}: interpolation {p['interpolation']!r}; valid choices: {', '.join(INTERPOLATIONS)}"
        )
    if "angles" in p:
        angles = tuple(p["angles"])
        if not angles:
            raise ConfigError(f"penalty {name!r}: angles must not be empty")
        for a in angles:
            if not (isinstance(a, (int, float)) or a in ISOMETRIES):
                raise ConfigError(
                    f"penalty {name!r}: angle {a!r} is neither degrees nor one of {', '.join(ISOMETRIES)}"
                )


# ------------------------------------------------------------------------- checks (one wording)
def check_int_ge(key: str, v: Any, low: int) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
        raise ConfigError(f"{key}: must be an integer >= {low}, got {v!r}")


def check_fraction(key: str, v: Any) -> None:
    """``v`` in (0, 1]."""
    if not (isinstance(v, (int, float)) and 0 < v <= 1):
        raise ConfigError(f"{key}: must be in (0, 1], got {v!r}")


def check_choice(key: str, v: Any, choices) -> None:
    if v not in choices:
        raise ConfigError(f"{key}: unknown {v!r}; valid choices: {', '.join(choices)}")


def check_list(key: str, values: list, choices) -> None:
    """A non-empty list of distinct values from ``choices``."""
    if not values:
        raise ConfigError(f"{key}: must not be empty; valid choices: {', '.join(choices)}")
    for v in values:
        if v not in choices:
            raise ConfigError(f"{key}: unknown value {v!r}; valid choices: {', '.join(choices)}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{key}: duplicate entries in {values!r}")


def check_training(values: dict, prefix: str = "") -> None:
    """Check the training keys present in ``values`` (any subset of :class:`TrainConfig`'s fields);
    errors name ``prefix + key``. The one place that says what a valid training setting is."""
    p = prefix
    for key, low in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("val_limit", 0)):
        if key in values:
            check_int_ge(p + key, values[key], low)
    if "lam" in values and not (isinstance(values["lam"], (int, float)) and math.isfinite(values["lam"])
                                and values["lam"] >= 0):
        raise ConfigError(f"{p}lam: must be a finite number >= 0, got {values['lam']!r}")
    if "lr" in values and not (isinstance(values["lr"], (int, float)) and math.isfinite(values["lr"])
                               and values["lr"] > 0):
        raise ConfigError(f"{p}lr: must be a finite number > 0, got {values['lr']!r}")
    if "data_fraction" in values:
        check_fraction(p + "data_fraction", values["data_fraction"])
    if "val_fraction" in values and not (isinstance(values["val_fraction"], (int, float))
                                         and 0 < values["val_fraction"] < 1):
        raise ConfigError(f"{p}val_fraction: must be in (0, 1), got {values['val_fraction']!r}")
    for key, choices in (("optimizer", OPTIMIZERS), ("batch_norm", BATCH_NORMS), ("device", DEVICES)):
        if key in values:
            check_choice(p + key, values[key], choices)
    if values.get("model"):
        check_choice(p + "model", values["model"], MODELS)


# ------------------------------------------------------------------------- the training configuration
@dataclass
class TrainConfig:
    """Everything that determines one training run; validated on construction.

    Args:
        dataset: ``mnist`` or ``fashion-mnist``.
        model: ``cnn3b`` or ``cnn4b``; empty means the dataset's default (docs/spec.md §2).
        penalty: one of :data:`PENALTY_NAMES` (``none`` is the baseline).
        lam: penalty weight λ >= 0.
        penalty_params: overrides of the penalty's hyper-parameters (s, m, eps, angles, class_rule,
            interpolation), see :data:`PENALTY_DEFAULTS`.
        optimizer: ``adam`` or ``sgd``; lr: its learning rate.
        batch_size, epochs: the usual.
        seed: seeds the data subset, shuffling, initialisation, dropout and symmetry angles.
        data_fraction: fraction of the training split used (quick runs), in (0, 1].
        val_fraction: validation share carved from the official training set (docs/spec.md §1).
        split_seed: seed of that carve (fixed across trials so all see the same validation set).
        device: ``auto`` (GPU if available), ``cpu`` or ``cuda``.
        data_root: folder of prepared data (default ``$SALIENCY_DATA_ROOT`` or ``./data``).
        eval_batch_size: batch size for validation passes.
        batch_norm: models with BatchNorm (cnn4b): ``standard`` (default) trains the cross-entropy through
            torch's BatchNorm (gradient through the batch statistics) and computes the saliency g for the
            penalty with the batch statistics held constant (exact per-sample, docs/spec.md §3) in a second forward;
            ``constant`` uses the constant-statistics forward for both (one forward, as before; measured
            2.1 points less test accuracy over 6 seeds, bench/bench_batchnorm.py).
        val_limit: evaluate validation accuracy on the first ``val_limit`` validation images only
            (0 = all); the validation split is already a random permutation, so this is a random subset.
    """

    dataset: str = "mnist"
    model: str = ""
    penalty: str = "none"
    lam: float = 0.1
    penalty_params: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 30
    epochs: int = 8
    seed: int = 0
    data_fraction: float = 1.0
    val_fraction: float = 0.1
    split_seed: int = 0
    device: str = "auto"
    data_root: str = ""
    eval_batch_size: int = 1000
    val_limit: int = 0
    batch_norm: str = "standard"

    def __post_init__(self) -> None:
        data_mod.check_dataset(self.dataset)
        self.model = self.model or DEFAULT_MODEL[self.dataset]
        check_penalty(self.penalty)
        self.penalty_params = resolve_penalty_params(self.penalty, self.penalty_params)
        check_training(asdict(self))

    def to_dict(self) -> dict:
        return asdict(self)
