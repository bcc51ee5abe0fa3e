"""The evaluation stage's settings (the study's ``evaluation:`` section), validated once, without torch.

:class:`Evaluation` (with its :class:`Roar`) is the one definition: ``study.config`` builds it from
the YAML, the stage (:class:`evaluation.stage.StageSettings`) runs it, the report reads it back from
the study's ``config.yaml``. The names it checks come from the torch-free registries
(:mod:`evaluation.metrics.registry`, :data:`evaluation.attributions.METHODS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foundations.data import TEST_SIZE
from trainables.config import ConfigError, check_choice, check_fraction, check_int_ge, check_list

ROAR_REPLACEMENTS = ("mean", "zero")


@dataclass
class Roar:
    """ROAR settings (docs/spec.md §5), used by the evaluation stage.

    Args:
        fractions: fractions t of pixels replaced; repeats: retraining seeds per fraction.
        epochs, data_fraction: training of each retrained model.
        replacement: ``mean`` (per-dataset mean pixel) or ``zero``.
        methods: attribution methods ranked for ROAR (null = the evaluation's ``methods``).
        n_test: modified test images scored (0 = the whole test set).
    """

    fractions: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    repeats: int = 3
    epochs: int = 1
    data_fraction: float = 1.0
    replacement: str = "mean"
    methods: list[str] | None = None
    n_test: int = 0

    def __post_init__(self) -> None:
        if not self.fractions:
            raise ConfigError("fractions: must not be empty")
        for t in self.fractions:
            if not 0 < t < 1:
                raise ConfigError(f"fractions: each must be in (0, 1), got {t}")
        check_int_ge("repeats", self.repeats, 1)
        check_int_ge("epochs", self.epochs, 1)
        check_fraction("data_fraction", self.data_fraction)
        check_choice("replacement", self.replacement, ROAR_REPLACEMENTS)
        if self.methods is not None:
            from evaluation.attributions import METHODS

            check_list("methods", self.methods, METHODS)
        check_int_ge("n_test", self.n_test, 0)


@dataclass
class Evaluation:
    """The post-hoc evaluation stage's settings: the study's ``evaluation:`` section, validated once.

    Args:
        methods: attribution methods (``evaluation.attributions.METHODS``).
        metrics: metrics to compute (``evaluation.metrics.METRICS``).
        n_samples: test images per model for the per-image metrics.
        chunk_size: images per evaluation task.
        roar: remove-and-retrain settings.
        seed: seeds every random choice of the evaluation.
        method_params: per attribution method, e.g. ``{integrated_gradients: {n_steps: 16}}``.
        metric_params: per metric group, e.g. ``{gaussian: {n_draws: 2}}``.
        gallery_n: test images per model in the ``gallery`` table (the report's saliency gallery); 0: none.
        map_models: whose maps score each model's MoRF and faithfulness: ``own`` (always computed) and
            penalties whose selected model's maps also score every other model (the ``evaluation``
            table's ``map_model`` column names that model; :mod:`evaluation.cross_maps`).
        map_methods: the methods whose maps score the other models (null = every method but ``random``;
            the original study used Saliency only).
    """

    methods: list[str] = field(
        default_factory=lambda: ["saliency", "integrated_gradients", "input_x_gradient", "smoothgrad"])
    metrics: list[str] = field(
        default_factory=lambda: ["morf", "faithfulness", "complexity", "gaussian", "square_block", "roar"]
    )
    n_samples: int = 1000
    chunk_size: int = 100
    roar: Roar = field(default_factory=Roar)
    seed: int = 0
    method_params: dict[str, dict] = field(default_factory=dict)
    metric_params: dict[str, dict] = field(default_factory=dict)
    gallery_n: int = 6
    map_models: list[str] = field(default_factory=lambda: ["own"])
    map_methods: list[str] | None = None

    def __post_init__(self) -> None:
        from evaluation.attributions import METHODS, resolve_method_params
        from evaluation.metrics import registry  # the metrics' names and parameters (no torch)

        METRICS = registry.groups("evaluate")
        METRIC_PARAMS = {g: set(p) for g, p in registry.params().items()}

        if self.method_params:
            check_list("method_params", list(self.method_params), METHODS)
        for m, params in self.method_params.items():
            try:
                resolve_method_params(m, dict(params))
            except ValueError as exc:
                raise ConfigError(f"method_params.{m}: {exc}") from None
        if self.metric_params:
            check_list("metric_params", list(self.metric_params), METRICS)
        for m, params in self.metric_params.items():
            bad = sorted(set(params) - METRIC_PARAMS[m])
            if bad:
                raise ConfigError(
                    f"metric_params.{m}: unknown parameter(s) {bad}; valid: "
                    f"{', '.join(sorted(METRIC_PARAMS[m])) or 'none'}"
                )

        check_list("methods", self.methods, METHODS)
        check_list("metrics", self.metrics, (*METRICS, "roar"))
        check_int_ge("n_samples", self.n_samples, 1)
        check_int_ge("chunk_size", self.chunk_size, 1)
        check_int_ge("gallery_n", self.gallery_n, 0)
        for key, low in (("n_samples", 1), ("gallery_n", 0)):
            check_test_images(key, getattr(self, key), low)
        from trainables.config import PENALTY_NAMES

        check_list("map_models", self.map_models, ("own", *PENALTY_NAMES))
        if self.map_methods is not None:
            check_list("map_methods", self.map_methods, [m for m in self.methods if m != "random"])

    @property
    def crossmap_methods(self) -> list[str]:
        """The methods whose maps score the other models: ``map_methods``, default every method but random."""
        return list(self.map_methods) if self.map_methods is not None else [m for m in self.methods if m != "random"]

    @property
    def evaluate_metrics(self) -> list[str]:
        """The metric groups computed per image (``evaluate_model``): ``metrics`` without ``roar``."""
        return [m for m in self.metrics if m != "roar"]

    @property
    def roar_methods(self) -> list[str]:
        """The methods ranked for ROAR: ``roar.methods`` (default: ``methods``), none without ``roar``."""
        return list(self.roar.methods or self.methods) if "roar" in self.metrics else []


def check_test_images(key: str, n: int, low: int) -> None:
    """A count of test images cannot exceed the test split (the same size for every dataset)."""
    if n > TEST_SIZE:
        raise ConfigError(f"{key}: must be an integer in [{low}, {TEST_SIZE}] (the test set has {TEST_SIZE} images), "
                          f"got {n}")
