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
    PENALTY_NAMES, ConfigError, TrainConfig, check_choice, check_int_ge, check_list, check_training,
    resolve_penalty_params,
)
from evaluation.config import Evaluation, Roar  # noqa: F401  (the `evaluation:` section; no torch)
from foundations.profile import Simulation  # the `simulate:` section (study.launch --simulate; no torch)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
PRESETS = ("quick", "paper", "full", "replicate", "replicate-fashion", "lambda-response", "lambda-search")
OBJECTIVES = ("multi", "val_acc", "val_morf")  # multi = maximise (val_acc, val_morf) jointly
SAMPLERS = ("tpe", "nsga2", "random")
SCHEDULERS = ("asha", "fifo")
SCHEDULES = ("auto", "concurrent", "sequential")
SELECTS = ("rule", "every")  # rule: one model per (dataset, penalty), or every seed of replicates; every: all trials


# ConfigError (imported above) is defined with the training's checks in trainables/config.py, the lowest
# layer that validates a configuration; every check of this module raises it.


NAME_MAX_CHARS = 100
NAME_FORM = f"one folder name of 1 to {NAME_MAX_CHARS} letters, digits, '.', '_' or '-', not '.' or '..'"
PATH_MAX_BYTES, PART_MAX_BYTES = 4096, 255  # Linux's PATH_MAX and NAME_MAX


def _shown(value: str) -> str:
    """A value for an error line: itself if short, else its start and its length."""
    return repr(value) if len(value) <= 60 else f"{value[:40]!r}... ({len(value)} characters)"


def check_name(name: str) -> None:
    """A study name becomes the folder ``outputs/<name>``: a single path component of safe characters."""
    if (len(name) > NAME_MAX_CHARS or name in (".", "..") or not all(c.isascii() and (c.isalnum() or c in "._-")
                                                                       for c in name)):
        raise ConfigError(f"name: must be {NAME_FORM}, got {_shown(name)}; valid choices: e.g. quick, paper-v2")


def check_path(key: str, value: str) -> None:
    """A local path the filesystem can hold (URIs are the object store's business)."""
    if not value or "://" in value:
        return
    size = len(value.encode())
    longest = max((len(part.encode()) for part in value.split("/")), default=0)
    if size > PATH_MAX_BYTES or longest > PART_MAX_BYTES:
        what = f"{size} characters" if size > PATH_MAX_BYTES else f"a folder name of {longest} characters"
        raise ConfigError(f"{key}: path too long ({what}), {_shown(value)}; valid choices: a path of at most "
                          f"{PATH_MAX_BYTES} characters whose folder names have at most {PART_MAX_BYTES}")


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


# --------------------------------------------------------------------------- the sections
RUNTIME = {"runtime": True}  # field metadata: how the study runs, not what it finds; may change on --resume
# TrainConfig fields the study sets itself, per trial or per dataset: not keys of the `training:` section
PER_TRIAL = {
    "dataset": "datasets", "penalty": "penalties", "lam": "search.space", "seed": "seed",
    "penalty_params": "penalty_params", "data_root": "data_root", "model": "per_dataset.<dataset>.model",
}
TRAINING_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name not in PER_TRIAL)
DATASET_KEYS = TRAINING_KEYS + ("model", "explain_n")  # what per_dataset.<dataset> may override


@dataclass
class Search:
    """The `search:` section: what each (dataset, penalty) search tries, how it picks, how much runs at once."""

    trials: int = 2  # trials per (dataset, penalty); the `none` baseline gets as many, varying the seed
    space: dict[str, Space] = field(default_factory=lambda: {"default": Space()})  # per penalty; `default` for all
    objective: str = "multi"  # multi: Pareto over (val_acc, val_morf); or one of val_acc, val_morf
    sampler: str = "tpe"  # Optuna sampler: tpe, nsga2 or random
    scheduler: str = "asha"  # asha (single objective and >= 2 epochs only) or fifo
    explain_n: int = 200  # validation images of the explanation score (MoRF of Saliency)
    morf_levels: int = 20  # removal levels of that score
    tolerance: float = field(default=0.01, metadata=RUNTIME)  # selection: val-accuracy tolerance (0.01 = 1 point)
    select: str = field(default="rule", metadata=RUNTIME)  # models evaluated: rule (its pick) or every (every trial)
    max_concurrent_trials: int = field(default=2, metadata=RUNTIME)  # trials at once per search
    max_failures: int = field(default=1, metadata=RUNTIME)  # retries of a failed trial (a diverged one: none)
    schedule: str = field(default="auto", metadata=RUNTIME)  # auto, concurrent (study/schedule.py) or sequential
    max_concurrent_searches: int = field(default=0, metadata=RUNTIME)  # 0 = enough to fill the slots
    max_concurrent_total: int = field(default=0, metadata=RUNTIME)  # slots in trials (0 = CPUs / resources.cpu)

    def __post_init__(self) -> None:
        for key in self.space:
            if key != "default" and key not in PENALTY_NAMES:
                raise ConfigError(f"space.{key}: unknown penalty; valid keys: default, {', '.join(PENALTY_NAMES)}")
        for key in ("trials", "max_concurrent_trials", "explain_n", "morf_levels"):
            check_int_ge(key, getattr(self, key), 1)
        check_int_ge("max_failures", self.max_failures, 0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("select", self.select, SELECTS)
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


# --------------------------------------------------------------------------- the study
@dataclass
class StudyConfig:
    """Everything that defines a study: a few study-wide keys and four sections.

    ``training`` is the one :class:`~trainables.config.TrainConfig` (the study sets its dataset, penalty,
    λ, seed, penalty_params, data_root and model per trial); ``search``, ``resources`` and ``evaluation``
    are the other sections. Fields marked ``RUNTIME`` (and the whole ``resources`` and ``evaluation``
    sections) may change on ``--resume``; everything else is the search's identity (:meth:`search_key`).
    """

    name: str = "quick"  # recorded in every row; default output folder outputs/<name>
    output: str = field(default="", metadata=RUNTIME)  # a folder or a URI ('' = outputs/<name>)
    data_root: str = field(default="", metadata=RUNTIME)  # prepared data ('' = $SALIENCY_DATA_ROOT or ./data)
    datasets: list[str] = field(default_factory=lambda: list(DATASETS))  # from foundations.data.DATASETS
    penalties: list[str] = field(default_factory=lambda: list(PENALTY_NAMES))  # `none` is the baseline
    seed: int = 0  # trial k trains with seed + k; the samplers' seeds derive from it
    penalty_params: dict[str, dict] = field(default_factory=dict)  # fixed hyper-parameters per penalty
    per_dataset: dict[str, dict] = field(default_factory=dict)  # per-dataset training keys, model, explain_n
    training: TrainConfig = field(default_factory=TrainConfig)  # the training section (TrainConfig's defaults)
    search: Search = field(default_factory=Search)  # the search section
    resources: Resources = field(default_factory=Resources, metadata=RUNTIME)  # per trial CPUs and GPU share
    evaluation: Evaluation = field(default_factory=Evaluation, metadata=RUNTIME)  # its own fingerprint
    simulate: Simulation = field(default_factory=Simulation)  # --simulate: sleeping trials and tasks (profile)

    def __post_init__(self) -> None:
        _coerce_fields(self)
        check_name(self.name)
        check_path("data_root", self.data_root)
        check_path("output", self.output)
        if self.output:
            from foundations import storage

            try:
                storage.normalize(self.output)
            except storage.StorageError as exc:
                raise ConfigError(f"output: {exc}") from None
        check_list("datasets", self.datasets, DATASETS)
        check_list("penalties", self.penalties, PENALTY_NAMES)
        for key, params in self.penalty_params.items():
            try:
                resolve_penalty_params(key, params)
            except ValueError as exc:
                raise ConfigError(f"penalty_params.{key}: {exc}") from None
        check_int_ge("seed", self.seed, 0)
        for ds, over in self.per_dataset.items():
            where = f"per_dataset.{ds}"
            if ds not in DATASETS:
                raise ConfigError(f"{where}: unknown dataset; valid choices: {', '.join(DATASETS)}")
            if not isinstance(over, dict):
                raise ConfigError(f"{where}: expected a mapping, got {over!r}")
            for k, v in over.items():
                if k not in DATASET_KEYS:
                    raise ConfigError(f"{where}.{k}: unknown key; valid keys: {', '.join(DATASET_KEYS)}")
                if k == "explain_n" and v is not None:
                    check_int_ge(f"{where}.explain_n", v, 1)
            check_training({k: v for k, v in over.items() if v is not None and k != "explain_n"}, prefix=where + ".")
        # null means "the section's value" (older saved configs list every key): kept out of the search key
        self.per_dataset = {ds: {k: v for k, v in o.items() if v is not None} for ds, o in self.per_dataset.items()}

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
        """``key`` (a training key, ``model`` or ``explain_n``) for ``dataset``: its ``per_dataset``
        override if set, else the section's value (``model``: '' = the dataset's default)."""
        v = self.per_dataset.get(dataset, {}).get(key)
        if v is not None:
            return v
        if key == "model":
            return ""
        return getattr(self.search, key) if key == "explain_n" else getattr(self.training, key)

    def space_for(self, penalty: str) -> Space:
        """The search space of ``penalty``: its own ``space`` entry, else ``space.default``.

        (When loading YAML, a penalty's entry inherits the keys it does not set from ``default``.)
        """
        return self.search.space.get(penalty) or self.search.space.get("default") or Space()

    def grids(self, penalty: str) -> list[tuple[str, list[float]]]:
        """The gridded keys of ``penalty``'s space, as (key, values); λ is never gridded for ``none``."""
        sp = self.space_for(penalty)
        keys = ("lr",) if penalty == "none" else ("lam", "lr")
        return [(k, getattr(sp, k)["grid"]) for k in keys if Space.kind(getattr(sp, k)) == "grid"]

    def n_trials(self, penalty: str) -> int:
        """Trials of ``penalty``'s search: ``trials`` seeds, times the size of each grid."""
        return self.search.trials * math.prod(len(v) for _, v in self.grids(penalty))

    def replicated(self, penalty: str) -> bool:
        """True when ``penalty``'s trials differ by seed only (λ fixed, lr not searched): its seeds are
        replicates, every seed's model is selected and evaluated, and the analysis averages over them.
        For ``none`` (no λ) its space's λ decides, so a study with a fixed λ replicates its baseline too."""
        sp = self.space_for(penalty)
        return Space.kind(sp.lam) == "fixed" and Space.kind(sp.lr) in ("fixed", "none")

    def keeps_every(self, penalty: str) -> bool:
        """True when every finished trial of ``penalty`` is selected and evaluated: its seeds are replicates
        (:meth:`replicated`) or ``search.select`` is ``every`` (e.g. a λ grid, every point with its seeds)."""
        return self.search.select == "every" or self.replicated(penalty)

    def train_config(self, dataset: str, penalty: str) -> dict:
        """The fixed part of a trial's ``TrainConfig``: the training section, the dataset's overrides and
        what the study sets (λ, lr and seed are then set per trial)."""
        over = {k: v for k, v in self.per_dataset.get(dataset, {}).items() if k in TRAINING_KEYS and v is not None}
        return {**self.training.to_dict(), **over, "dataset": dataset, "model": self.for_dataset(dataset, "model"),
                "penalty": penalty, "lam": 0.0 if penalty == "none" else 0.1, "seed": self.seed,
                "penalty_params": dict(self.penalty_params.get(penalty, {})), "data_root": str(self.data_path)}

    @property
    def data_path(self) -> Path:
        from foundations.data import default_root

        return Path(self.data_root).absolute() if self.data_root else default_root()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["training"] = {k: v for k, v in d["training"].items() if k not in PER_TRIAL}
        return d

    def search_key(self) -> dict:
        """The settings a finished search depends on (a resumed study must not change them): every field
        but those marked RUNTIME, at any depth of the sections."""
        return _without_runtime(self)


def _without_runtime(obj, prefix: str = "") -> dict:
    """``obj``'s fields as a flat {dotted key: value}, without RUNTIME fields and the study's per-trial keys."""
    out = {}
    for f in fields(obj):
        if f.metadata.get("runtime") or (isinstance(obj, TrainConfig) and f.name in PER_TRIAL):
            continue
        v = getattr(obj, f.name)
        if isinstance(v, (TrainConfig, Search, Simulation)):
            out.update(_without_runtime(v, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = {k: dataclasses.asdict(x) for k, x in v.items()} if f.name == "space" else v
    return out


# --------------------------------------------------------------------------- the flat form of older versions
SECTION_OF = {  # a key of the flat configuration (before sections) -> its section today
    **{k: "training" for k in ("epochs", "batch_size", "lr", "optimizer", "data_fraction", "val_fraction",
                               "split_seed", "val_limit")},
    **{f.name: "search" for f in fields(Search)},
}


def migrate(data: dict) -> dict:
    """A raw mapping of the flat form (a preset or a study's saved config.yaml of an older version) in
    sections; a mapping already in sections comes back unchanged. Raises on a key given in both forms."""
    out = dict(data)
    for key in [k for k in data if k in SECTION_OF]:
        section = out.setdefault(SECTION_OF[key], {})
        if not isinstance(section, dict):
            raise ConfigError(f"{SECTION_OF[key]}: expected a mapping, got {section!r}")
        if key in section:
            raise ConfigError(f"{key}: given twice, as {key} and {SECTION_OF[key]}.{key}; keep {SECTION_OF[key]}.{key}")
        section[key] = out.pop(key)
    return out


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
        if path[0] in SECTION_OF:  # `--set trials=3`, the flat name of older versions: search.trials
            path = [SECTION_OF[path[0]], *path]
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
    return migrate(parse_mapping(p.read_text(), f"config file {p}"))


def config_from_raw(data: dict) -> StudyConfig:
    """Build the config from a raw mapping (the flat form of older versions migrated to sections); a
    penalty's ``search.space`` entry inherits ``search.space.default``."""
    data = migrate(data)
    for key in (data.get("training") or {}) if isinstance(data.get("training"), dict) else ():
        if key in PER_TRIAL:
            raise ConfigError(f"training.{key}: set by the study for each trial (from {PER_TRIAL[key]}); "
                              f"valid keys: {', '.join(TRAINING_KEYS)}")
    space = (data.get("search") or {}).get("space") if isinstance(data.get("search"), dict) else None
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
    return migrate(data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> StudyConfig:
    """Load a YAML config (a path or a preset name; None = dataclass defaults) and apply overrides."""
    return config_from_raw(apply_overrides(load_raw(path), list(overrides or [])))


def dump_config(cfg: StudyConfig) -> str:
    """The config as YAML (readable back with :func:`load_config`)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
