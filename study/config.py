"""The study configuration: one typed, validated dataclass loaded from YAML plus ``--set`` overrides.

::

    cfg = load_config("configs/quick.yaml", ["trials=20", "datasets=[mnist]", "space.gradient.lam=[0.01, 1]"])

Every key is checked up front: unknown keys, wrong types and impossible values raise
:class:`ConfigError` with the dotted key and the valid choices, before anything expensive runs.
Presets live in ``configs/`` (``quick`` is the default, ``paper`` the seed's set-up, ``full``
cluster-sized); ``--config quick`` is short for ``--config configs/quick.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from foundations.data import DATASETS
from trainables.config import (  # torch-free: the training's names, checks and defaults
    PENALTY_NAMES, ConfigError, check_choice, check_int_ge, check_list, check_training,
    resolve_penalty_params,
)
from evaluation.config import Evaluation, Roar  # noqa: F401  (the `evaluation:` section; no torch)
from foundations.profile import Simulation  # the `simulate:` section (study.launch --simulate; no torch)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
PRESETS = ("quick", "paper", "full", "replicate")
OBJECTIVES = ("multi", "val_acc", "val_morf")  # multi = maximise (val_acc, val_morf) jointly
SAMPLERS = ("tpe", "nsga2", "random")
SCHEDULERS = ("asha", "fifo")
SCHEDULES = ("concurrent", "sequential")
# the study's keys that are TrainConfig fields, checked by trainables.config.check_training
TRAINING_KEYS = ("epochs", "batch_size", "lr", "optimizer", "data_fraction", "val_fraction", "val_limit")


# ConfigError (imported above) is defined with the training's checks in trainables/config.py, the lowest
# layer that validates a configuration; every check of this module raises it.


# --------------------------------------------------------------------------- sections
SPACE_FORMS = "a number (fixed: every trial uses it), [low, high] (log-uniform range) or {grid: [v1, v2, ...]}"


@dataclass
class Space:
    """Search space of one penalty: each of ``lam`` and ``lr`` takes one of three forms.

    - a number, e.g. ``lam: 0.1``: fixed; every trial uses it, trials differ by seed only
      (the seeds are then replicates: every seed's model is evaluated);
    - ``[low, high]``: sampled log-uniformly by Optuna (the default for λ);
    - ``{grid: [0.01, 0.1, 1]}``: every value crossed with ``trials`` seeds
      (``len(grid) * trials`` trials).

    Args:
        lam: the penalty weight λ (ignored for ``none``).
        lr: the learning rate; ``null`` keeps the study's fixed ``lr``.
    """

    lam: Any = field(default_factory=lambda: [0.01, 1.0])
    lr: Any = None

    def __post_init__(self) -> None:
        for key in ("lam", "lr"):
            setattr(self, key, _check_space_value(key, getattr(self, key)))

    @staticmethod
    def kind(value) -> str:
        """``fixed``, ``range``, ``grid`` or ``none`` (``lr: null``)."""
        if value is None:
            return "none"
        if isinstance(value, dict):
            return "grid"
        return "range" if isinstance(value, list) else "fixed"


def _check_space_value(key: str, v):
    """Validate one search-space value (three forms, see :class:`Space`); returns it normalised."""
    if v is None and key == "lr":
        return None

    def number(x, where: str) -> float:
        if isinstance(x, str):
            try:
                x = float(x)
            except ValueError:
                raise ConfigError(f"{where}: expected {SPACE_FORMS}, got {x!r}") from None
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ConfigError(f"{where}: expected {SPACE_FORMS}, got {x!r} ({type(x).__name__})")
        if not (math.isfinite(x) and x > 0):
            raise ConfigError(f"{where}: values must be finite and > 0 (log scale), got {x!r}")
        return float(x)

    if isinstance(v, dict):
        if set(v) != {"grid"}:
            raise ConfigError(f"{key}: a mapping must be {{grid: [v1, v2, ...]}}, got keys {sorted(map(str, v))}; "
                              f"expected {SPACE_FORMS}")
        g = v["grid"]
        if not isinstance(g, (list, tuple)) or not g:
            raise ConfigError(f"{key}.grid: must be a non-empty list of numbers > 0, got {g!r}")
        vals = [number(x, f"{key}.grid") for x in g]
        if len(set(vals)) != len(vals):
            raise ConfigError(f"{key}.grid: duplicate values in {vals!r}")
        return {"grid": vals}
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ConfigError(f"{key}: expected [low, high], got {list(v)!r}; or {SPACE_FORMS}")
        lo, hi = (number(x, key) for x in v)
        if lo >= hi:
            raise ConfigError(f"{key}: low must be < high, got low={lo} >= high={hi} "
                              f"(a fixed value is written as a number, e.g. {key}: {lo})")
        return [lo, hi]
    if v is None:
        raise ConfigError(f"{key}: expected {SPACE_FORMS}, got null")
    return number(v, key)


@dataclass
class Resources:
    """Resources of one trial: CPUs (torch threads follow them) and a GPU share (0 = CPU only)."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu <= 0:
            raise ConfigError(f"cpu: must be > 0, got {self.cpu}")
        if self.gpu < 0:
            raise ConfigError(f"gpu: must be >= 0 (a fraction such as 0.25 shares a GPU), got {self.gpu}")
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise ConfigError(f"gpu: above 1 it must be a whole number of GPUs, got {self.gpu}")


@dataclass
class DatasetOverrides:
    """Per-dataset values that replace the study-wide ones (``null`` = use the study's)."""

    data_fraction: float | None = None
    val_limit: int | None = None
    explain_n: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    model: str | None = None


# --------------------------------------------------------------------------- the study
@dataclass
class StudyConfig:
    """Everything that defines a search study.

    Args:
        name: study name (recorded in every row; default output folder ``outputs/<name>``).
        output: where the study writes ('' = ``outputs/<name>`` under the current directory): a
            folder, or on a cluster a path every node mounts or a URI (``s3://bucket/prefix``).
        data_root: prepared data folder ('' = ``$SALIENCY_DATA_ROOT`` or ``./data``).
        datasets: datasets searched, from ``foundations.data.DATASETS``.
        penalties: penalties searched, from ``trainables.config.PENALTY_NAMES`` (``none`` is the
            baseline of the selection rule).
        space: search space per penalty name; key ``default`` applies to every penalty and a
            penalty's own entry overrides it field by field.
        penalty_params: fixed hyper-parameters per penalty (s, m, eps, angles, class_rule).
        trials: trials per (dataset, penalty); the ``none`` baseline gets as many, varying the seed.
        epochs, batch_size, lr, optimizer: training (``lr`` is fixed unless the space searches it).
        data_fraction: fraction of the training split used by each trial.
        val_fraction, split_seed: the validation carve (SPEC §1), the same for all trials.
        val_limit: validation accuracy on the first ``val_limit`` validation images (0 = all).
        per_dataset: per-dataset overrides (data_fraction, val_limit, explain_n, epochs,
            batch_size, model), e.g. to keep cnn4b on Fashion-MNIST affordable on a CPU.
        seed: trial k of a (dataset, penalty) search trains with seed ``seed + k``; the Optuna
            sampler's seed derives from it and the (dataset, penalty) name.
        objective: ``multi`` (Pareto search over val accuracy and explanation score), or a single
            metric ``val_acc`` / ``val_morf``.
        sampler: Optuna sampler ``tpe`` (multi-objective capable), ``nsga2`` or ``random``.
        scheduler: ``asha`` (early stopping on the single objective; only used when the objective
            is single and epochs >= 2) or ``fifo``.
        resources: per trial CPUs and GPU share.
        max_concurrent_trials: trials running at once per search (each search keeps its own limit,
            so that a model-based sampler sees its own results between proposals).
        schedule: ``concurrent`` (default: every search and evaluation task share the cluster at once,
            evaluation starting as soon as a model is selected; study/schedule.py) or ``sequential``
            (one search after the other, then the evaluation stage).
        max_concurrent_searches: searches running at once (0 = enough to fill the study's slots).
        max_concurrent_total: the study's slots, in trials (0 = the cluster's CPUs / ``resources.cpu``;
            set it on an autoscaling cluster, whose current size is not its ceiling).
        max_failures: retries of a trial after a failure (a diverged trial is not retrained).
        tolerance: selection tolerance on validation accuracy, as a fraction (0.01 = 1 point).
        explain_n: validation images of the explanation score (MoRF of Saliency).
        morf_levels: removal levels of that score.
        evaluation: the evaluation stage's settings.
        simulate: ``profile`` ('' = a real run) and ``time_scale`` of a simulated study (study/simulate.py).
    """

    name: str = "quick"
    output: str = ""
    data_root: str = ""
    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    penalties: list[str] = field(default_factory=lambda: list(PENALTY_NAMES))
    space: dict[str, Space] = field(default_factory=lambda: {"default": Space()})
    penalty_params: dict[str, dict] = field(default_factory=dict)
    trials: int = 2
    epochs: int = 1
    batch_size: int = 30
    lr: float = 1e-3
    optimizer: str = "adam"
    data_fraction: float = 0.05
    val_fraction: float = 0.1
    split_seed: int = 0
    val_limit: int = 0
    per_dataset: dict[str, DatasetOverrides] = field(default_factory=dict)
    seed: int = 0
    objective: str = "multi"
    sampler: str = "tpe"
    scheduler: str = "asha"
    resources: Resources = field(default_factory=Resources)
    max_concurrent_trials: int = 2
    schedule: str = "concurrent"
    max_concurrent_searches: int = 0
    max_concurrent_total: int = 0
    max_failures: int = 1
    tolerance: float = 0.01
    explain_n: int = 200
    morf_levels: int = 20
    evaluation: Evaluation = field(default_factory=Evaluation)
    simulate: Simulation = field(default_factory=Simulation)  # --simulate: sleeping trials and tasks (profile)

    def __post_init__(self) -> None:
        _coerce_fields(self)
        if not self.name or any(c in self.name for c in "/\\ ="):
            raise ConfigError(f"name: must be a non-empty name without '/', '\\\\', ' ' or '=', got {self.name!r}")
        if self.output:
            from foundations import storage

            try:
                storage.normalize(self.output)
            except storage.StorageError as exc:
                raise ConfigError(f"output: {exc}") from None
        check_list("datasets", self.datasets, DATASETS)
        check_list("penalties", self.penalties, PENALTY_NAMES)
        for key in self.space:
            if key != "default" and key not in PENALTY_NAMES:
                raise ConfigError(f"space.{key}: unknown penalty; valid keys: default, {', '.join(PENALTY_NAMES)}")
        for key, params in self.penalty_params.items():
            try:
                resolve_penalty_params(key, params)
            except ValueError as exc:
                raise ConfigError(f"penalty_params.{key}: {exc}") from None
        for key in ("trials", "max_concurrent_trials", "explain_n", "morf_levels"):
            check_int_ge(key, getattr(self, key), 1)
        for key in ("max_failures", "seed", "split_seed"):
            check_int_ge(key, getattr(self, key), 0)
        check_training({k: getattr(self, k) for k in TRAINING_KEYS})  # the trainables' own checks
        for ds, o in self.per_dataset.items():
            if ds not in DATASETS:
                raise ConfigError(f"per_dataset.{ds}: unknown dataset; valid choices: {', '.join(DATASETS)}")
            if o.explain_n is not None:
                check_int_ge(f"per_dataset.{ds}.explain_n", o.explain_n, 1)
            over = {k: getattr(o, k) for k in TRAINING_KEYS + ("model",) if getattr(o, k, None) is not None}
            check_training(over, prefix=f"per_dataset.{ds}.")
        check_choice("schedule", self.schedule, SCHEDULES)
        for key in ("max_concurrent_searches", "max_concurrent_total"):
            check_int_ge(key, getattr(self, key), 0)
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        if not 0 <= self.tolerance < 1:
            raise ConfigError(
                f"tolerance: must be a fraction of accuracy in [0, 1) (0.01 = 1 point), got {self.tolerance}"
            )
        if self.morf_levels < 2:
            raise ConfigError(f"morf_levels: must be >= 2, got {self.morf_levels}")

    # ------------------------------------------------------------------ derived values
    @property
    def location(self) -> str:
        """Where the study writes: an absolute folder, or a URI (``s3://bucket/studies/quick``)."""
        from foundations import storage

        return storage.normalize(self.output or f"outputs/{self.name}")

    @property
    def remote(self) -> bool:
        """True when the study writes to an object store (``s3://`` …) rather than a folder."""
        from foundations import storage

        return storage.is_remote(self.location)

    @property
    def output_dir(self) -> Path:
        """The study folder, absolute (a local study; see :attr:`location` for one on a URI)."""
        if self.remote:
            raise ValueError(f"the study writes to {self.location}, not a local folder")
        return Path(self.location)

    def for_dataset(self, dataset: str, key: str):
        """``key`` for ``dataset``: its per-dataset override if set, else the study-wide value."""
        o = self.per_dataset.get(dataset)
        v = getattr(o, key, None) if o is not None else None
        if v is not None:
            return v
        return "" if key == "model" else getattr(self, key)

    def space_for(self, penalty: str) -> Space:
        """The search space of ``penalty``: its own ``space`` entry, else ``space.default``.

        (When loading YAML, a penalty's entry inherits the keys it does not set from ``default``.)
        """
        return self.space.get(penalty) or self.space.get("default") or Space()

    def grids(self, penalty: str) -> list[tuple[str, list[float]]]:
        """The gridded keys of ``penalty``'s space, as (key, values); λ is never gridded for ``none``."""
        sp = self.space_for(penalty)
        keys = ("lr",) if penalty == "none" else ("lam", "lr")
        return [(k, getattr(sp, k)["grid"]) for k in keys if Space.kind(getattr(sp, k)) == "grid"]

    def n_trials(self, penalty: str) -> int:
        """Trials of ``penalty``'s search: ``trials`` seeds, times the size of each grid."""
        return self.trials * math.prod(len(v) for _, v in self.grids(penalty))

    def replicated(self, penalty: str) -> bool:
        """True when ``penalty``'s trials differ by seed only (λ fixed, lr not searched): its seeds are
        replicates, every seed's model is selected and evaluated, and the analysis averages over them.
        For ``none`` (no λ) its space's λ decides, so a study with a fixed λ replicates its baseline too."""
        sp = self.space_for(penalty)
        return Space.kind(sp.lam) == "fixed" and Space.kind(sp.lr) in ("fixed", "none")

    def train_config(self, dataset: str, penalty: str) -> dict:
        """The fixed part of a trial's ``TrainConfig`` (λ, lr and seed are set per trial)."""
        return dict(
            dataset=dataset,
            model=self.for_dataset(dataset, "model"),
            penalty=penalty,
            lam=0.0 if penalty == "none" else 0.1,
            penalty_params=dict(self.penalty_params.get(penalty, {})),
            optimizer=self.optimizer,
            lr=self.lr,
            batch_size=self.for_dataset(dataset, "batch_size"),
            epochs=self.for_dataset(dataset, "epochs"),
            seed=self.seed,
            data_fraction=self.for_dataset(dataset, "data_fraction"),
            val_fraction=self.val_fraction,
            split_seed=self.split_seed,
            device="auto",
            data_root=str(self.data_path),
            val_limit=self.for_dataset(dataset, "val_limit"),
        )

    @property
    def data_path(self) -> Path:
        from foundations.data import default_root

        return Path(self.data_root).absolute() if self.data_root else default_root()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def search_key(self) -> dict:
        """The settings a finished search depends on (a resumed study must not change them)."""
        d = self.to_dict()
        for k in (
            "output",
            "data_root",
            "resources",
            "max_concurrent_trials",
            "max_failures",
            "tolerance",
            "evaluation",
            "schedule",
            "max_concurrent_searches",
            "max_concurrent_total",
        ):
            d.pop(k)
        d["simulate"].pop("time_scale")  # a simulated study may continue at another speed
        return d


# --------------------------------------------------------------------------- typed building
def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (mapping -> dataclass, int -> float)."""
    if tp is Any:  # validated by the section's own __post_init__
        return value
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise bad
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return build(tp, value, key)
    if tp is dict:
        if not isinstance(value, dict):
            raise bad
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _coerce_fields(obj) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        setattr(obj, f.name, _coerce(getattr(obj, f.name), hints[f.name], f.name))


def build(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types by name."""
    dotted = (prefix + ".") if prefix else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    names = [f.name for f in fields(cls)]
    for k in data:
        if k not in names:
            raise ConfigError(f"{dotted}{k}: unknown key; valid keys: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], dotted + k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if not dotted or msg.startswith(dotted) else dotted + msg) from None
    return obj


# --------------------------------------------------------------------------- loading
def preset_path(name_or_path: str | Path) -> Path:
    """``quick`` -> ``configs/quick.yaml``; any other value is a path."""
    if str(name_or_path) in PRESETS:
        return CONFIG_DIR / f"{name_or_path}.yaml"
    return Path(name_or_path)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=[1, 2]"`` -> (["a", "b"], [1, 2]); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. trials=20 or datasets=[mnist]")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse {raw!r} as YAML ({' '.join(str(exc).split())})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``KEY=VALUE`` overrides (dotted keys reach nested sections) to a raw config mapping."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def parse_mapping(text: str, where: str) -> dict:
    """The mapping a YAML config holds (``{}`` for an empty file; ``where`` names it in errors): invalid
    YAML, or a file that is not a mapping, is a :class:`ConfigError` naming the file, never a YAML traceback.
    The one parser of a config file, a study's saved config.yaml (launcher and analysis) included."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


def load_raw(path: str | Path | None) -> dict:
    """The raw mapping of a YAML config (``{}`` for None)."""
    if path is None:
        return {}
    p = preset_path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; presets: {', '.join(PRESETS)} (in {CONFIG_DIR})")
    return parse_mapping(p.read_text(), f"config file {p}")


def config_from_raw(data: dict) -> StudyConfig:
    """Build the config from a raw mapping; a penalty's ``space`` entry inherits ``space.default``."""
    space = data.get("space")
    if isinstance(space, dict) and isinstance(space.get("default"), dict):
        for k, v in space.items():
            if k != "default" and isinstance(v, dict):
                space[k] = {**space["default"], **v}
    return build(StudyConfig, data)


SAVED = "config.yaml"


def read_saved(location: str) -> dict:
    """The raw mapping of a study's saved ``<location>/config.yaml`` (a folder or a URI), for the launcher
    (``study.loading`` reads it for the analysis with the same :func:`parse_mapping`)."""
    from foundations import storage

    loc = storage.join(location, SAVED)
    if not storage.is_file(loc):
        raise ConfigError(f"output: no study in {location} (missing {SAVED}); run it without --resume first")
    try:
        data = parse_mapping(storage.read_text(loc), loc)
        if not data:
            raise ConfigError(f"{loc}: expected a mapping at the top level, found an empty file")
    except ConfigError as exc:
        raise ConfigError(f"output: {exc}; restore it, or use another --output") from None
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> StudyConfig:
    """Load a YAML config (a path or a preset name; None = dataclass defaults) and apply overrides."""
    return config_from_raw(apply_overrides(load_raw(path), list(overrides or [])))


def dump_config(cfg: StudyConfig) -> str:
    """The config as YAML (readable back with :func:`load_config`)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
