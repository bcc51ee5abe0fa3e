"""The metric registry: one description per metric group, and nothing that needs torch.

Every value the study reports under a ``metric`` name is an :class:`Output` of one registered
:class:`MetricSpec`: its direction (higher is better, or None for a curve point), its label in the
report, and the name of its level axis when it is measured per level (a curve). A spec also holds
the group's tunable parameters with their defaults, its references, and the function that computes
its rows inside :func:`evaluation.evaluate.evaluate_model` (``"module:function"``, imported only
when the evaluation runs). The metric modules read their ``NAME``/``HIGHER_IS_BETTER``/``OUTPUTS``/
``REFERENCE`` from here; the analysis (directions), the report (labels) and the configuration
(metric and parameter names) read this module without importing torch.

Adding a metric = its module (the computation and a ``rows(inp)`` function, see
:class:`evaluation.metrics._common.MetricInput`) + one :func:`register` call below. A group registered
with ``opt_in=True`` (e.g. ``mprt``, which recomputes every map once per layer) is valid in
``evaluation.metrics`` but left out of the default list (:func:`default_groups`,
:data:`evaluation.metrics.METRICS`): it is computed only where it is named.

The specs live here rather than in their modules because the analysis and the report must know
every metric's direction and label without importing the modules (which import torch and Captum).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

STAGES = ("evaluate", "evaluation", "search")
"""Where a group's values come from: ``evaluate`` = :func:`evaluation.evaluate.evaluate_model`
(one group of ``evaluation.metrics``, selectable in the config), ``evaluation`` = the evaluation
stage itself (test accuracy, ROAR), ``search`` = the search stage's validation metrics."""


@dataclass(frozen=True)
class Output:
    """One reported value (the ``metric`` column of the tables)."""

    name: str
    higher_is_better: bool | None  # None: a curve point, no direction of its own
    label: str = ""  # the report's name; default: the name with spaces for underscores
    level: str | None = None  # the level/curve axis ("sigma", "s_max", ...); None: a scalar
    model_level: bool = False  # describes the model, not an explanation: reported once, method ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " "))


@dataclass(frozen=True)
class MetricSpec:
    """One metric group: what it reports, how it is tuned and where it is computed."""

    name: str
    outputs: tuple[Output, ...]
    higher_is_better: bool | None  # of the group as a whole (the primary output's direction)
    params: Mapping[str, Any] = field(default_factory=dict)  # tunable parameter -> default
    references: tuple[str, ...] = ()
    rows: str | None = None  # "module:function" computing the rows in evaluate_model (stage "evaluate")
    stage: str = "evaluate"
    opt_in: bool = False  # computed only when named in ``metrics``: not one of the defaults (default_groups())

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"metric {self.name!r}: stage must be one of {STAGES}, got {self.stage!r}")
        if (self.stage == "evaluate") != (self.rows is not None):
            raise ValueError(f"metric {self.name!r}: a rows function is needed exactly for stage 'evaluate'")
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"metric {self.name!r}: duplicate outputs {names}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def reference(self) -> str:
        return "; ".join(self.references)

    def output(self, name: str) -> Output:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(f"metric {self.name!r} has no output {name!r}; outputs: {[o.name for o in self.outputs]}")

    def directions(self) -> dict[str, bool]:
        """Output -> higher is better, for the outputs that have a direction (the modules' ``OUTPUTS``)."""
        return {o.name: o.higher_is_better for o in self.outputs if o.higher_is_better is not None}

    def rows_function(self) -> Callable:
        """The function computing this group's rows (imports its module, hence torch)."""
        if self.rows is None:
            raise ValueError(f"metric {self.name!r} is computed by the {self.stage} stage, not by evaluate_model")
        module, _, fn = self.rows.partition(":")
        return getattr(importlib.import_module(module), fn)


REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    """Add ``spec``; ValueError if its name or one of its outputs is already registered."""
    if spec.name in REGISTRY:
        raise ValueError(f"metric {spec.name!r} is already registered")
    taken = {o.name: s.name for s in REGISTRY.values() for o in s.outputs}
    clash = [o.name for o in spec.outputs if o.name in taken]
    if clash:
        raise ValueError(f"metric {spec.name!r}: outputs {clash} are already reported by {[taken[c] for c in clash]}")
    REGISTRY[spec.name] = spec
    return spec


def groups(stage: str | None = "evaluate") -> tuple[str, ...]:
    """Registered group names of ``stage`` (all with None), in registration order."""
    return tuple(n for n, s in REGISTRY.items() if stage is None or s.stage == stage)


def default_groups() -> tuple[str, ...]:
    """The groups ``evaluate_model`` computes when no ``metrics`` are named (:data:`evaluation.metrics.METRICS`):
    every group of stage ``evaluate`` except the opt-in ones."""
    return tuple(n for n in groups("evaluate") if not REGISTRY[n].opt_in)


def outputs(stage: str | None = None) -> dict[str, Output]:
    """Every reported output name -> its :class:`Output` (of the groups of ``stage``; all with None)."""
    return {o.name: o for s in REGISTRY.values() if stage is None or s.stage == stage for o in s.outputs}


def group_of(output: str) -> MetricSpec:
    for s in REGISTRY.values():
        if any(o.name == output for o in s.outputs):
            return s
    raise KeyError(f"no registered metric reports {output!r}")


def directions() -> dict[str, bool | None]:
    """Metric name -> higher is better (None: no direction): every group name and every output
    (an output's own direction wins where a group and an output share a name)."""
    out: dict[str, bool | None] = {s.name: s.higher_is_better for s in REGISTRY.values()}
    out.update({name: o.higher_is_better for name, o in outputs().items()})
    return out


def labels() -> dict[str, str]:
    """Output name -> the report's label."""
    return {name: o.label for name, o in outputs().items()}


def curve_axes(stage: str | None = "evaluate") -> dict[str, str]:
    """Output name -> level axis, for the outputs measured per level (the curves)."""
    return {name: o.level for name, o in outputs(stage).items() if o.level is not None}


def params() -> dict[str, dict[str, Any]]:
    """Group -> {parameter: default} for the groups of ``evaluate_model``."""
    return {n: dict(REGISTRY[n].params) for n in groups("evaluate")}


# --------------------------------------------------------------------------- the registrations
# Per-image metrics of evaluate_model, in the order their rows are computed.
register(MetricSpec(
    "morf", higher_is_better=True,
    outputs=(Output("morf", True, "MoRF score"),
             Output("morf_curve", None, level="fraction removed")),
    params={"levels": 20, "baseline": 0.0},
    references=("Samek et al. 2017, IEEE TNNLS 28(11), doi:10.1109/TNNLS.2016.2599820",),
    rows="evaluation.metrics.morf:rows",
))
register(MetricSpec(
    "faithfulness", higher_is_better=True,
    outputs=(Output("faithfulness_nested", True, "faithfulness (nested)"),
             Output("faithfulness_correlation", True, "faithfulness corr.")),
    params={"levels": 20, "baseline": 0.0, "n_subsets": 100, "subset_fraction": 0.2},
    references=("Bhatt, Weller, Moura 2020, IJCAI, doi:10.24963/ijcai.2020/417",
                "Alvarez-Melis & Jaakkola 2018, NeurIPS"),
    rows="evaluation.metrics.faithfulness:rows",
))
register(MetricSpec(
    "complexity", higher_is_better=False,
    outputs=(Output("complexity", False, "complexity (nats)"),
             Output("complexity_seed", False, "complexity, original formula (+0.01 in the log)")),
    references=("Bhatt, Weller, Moura 2020, IJCAI, doi:10.24963/ijcai.2020/417",),
    rows="evaluation.metrics.complexity:rows",
))
register(MetricSpec(
    "gaussian", higher_is_better=True,
    outputs=(Output("max_sensitivity", False, "max-sensitivity", level="sigma"),
             Output("avg_sensitivity", False, "avg-sensitivity", level="sigma"),
             Output("gaussian_accuracy", True, level="sigma", model_level=True),
             Output("gaussian_auc", True, "noise AUC (from σ₁)", model_level=True),
             Output("gaussian_auc_clean", True, "noise AUC", model_level=True)),
    params={"sigmas": (0.1, 0.5, 1.0, 1.5), "n_draws": 4},
    references=("Yeh et al. 2019, NeurIPS (sensitivity)", "Bhatt et al. 2020, IJCAI",
                "Hendrycks & Dietterich 2019, ICLR"),
    rows="evaluation.metrics.gaussian:rows",
))
register(MetricSpec(
    "square_block", higher_is_better=True,
    outputs=(Output("block_infidelity", False, "block infidelity (normalised)", level="s_max"),
             Output("block_infidelity_raw", False, "block infidelity (raw, scale-dependent)", level="s_max"),
             Output("block_accuracy", True, level="s_max", model_level=True),
             Output("block_auc", True, "block AUC (from s₁)", model_level=True),
             Output("block_auc_clean", True, "block AUC", model_level=True)),
    params={"s_max": (6, 8, 10, 12), "n_draws": 4},
    references=("Yeh et al. 2019, NeurIPS (infidelity)", "Zeiler & Fergus 2014, ECCV (occlusion)"),
    rows="evaluation.metrics.square_block:rows",
))
register(MetricSpec(  # opt-in: recomputes every method's maps once per randomised layer
    "mprt", higher_is_better=False, opt_in=True,
    outputs=(Output("mprt_spearman", False, "MPRT Spearman (randomised vs original map)", level="layer"),
             Output("mprt_ssim", False, "MPRT SSIM (randomised vs original map)", level="layer")),
    references=("Adebayo et al. 2018, Sanity Checks for Saliency Maps, NeurIPS",
                "Hedström et al. 2023, Quantus, JMLR 24(34)"),
    rows="evaluation.metrics.mprt:rows",
))
# Computed by the evaluation stage (evaluation/stage.py) and the analysis.
register(MetricSpec(
    "accuracy", higher_is_better=True, stage="evaluation",
    outputs=(Output("accuracy", True, "test acc. (explanation subset)", model_level=True),
             Output("test_accuracy", True, model_level=True),  # the names the analysis's summary uses
             Output("test_acc", True, "test acc.", model_level=True)),
))
register(MetricSpec(  # every test image, one row each (evaluation/accuracy.py); `accuracy`: the explained subset
    "full_test_accuracy", higher_is_better=True, stage="evaluation",
    outputs=(Output("full_test_accuracy", True, "test acc., all test images", model_level=True),),
))
register(MetricSpec(
    "roar", higher_is_better=False, stage="evaluation",  # area under retrained accuracy vs fraction removed
    outputs=(Output("roar", False, "ROAR area (removed only)"),
             Output("roar_clean", False, "ROAR area")),
    params={"fractions": (0.1, 0.3, 0.5, 0.7, 0.9)},
    references=("Hooker et al. 2019, A Benchmark for Interpretability Methods in Deep Neural Networks",),
))
# The search stage's validation metrics (trainables/trainable.py).
register(MetricSpec(
    "validation", higher_is_better=True, stage="search",
    outputs=(Output("val_acc", True), Output("val_morf", True)),
))

__all__ = ["Output", "MetricSpec", "REGISTRY", "STAGES", "register", "groups", "default_groups", "outputs", "group_of",
           "directions", "labels", "curve_axes", "params"]
