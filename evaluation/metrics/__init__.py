"""Explanation and robustness metrics (docs/spec.md §5), one module per metric.

Each group is described once in :mod:`evaluation.metrics.registry` (outputs with direction, label
and level axis; parameters with defaults; references; the ``rows`` function that computes it). Each
module reads its ``NAME``, ``HIGHER_IS_BETTER``, ``OUTPUTS`` and ``REFERENCE`` from there and defines
a function ``(model, x, y, attributions, ..., seed)`` returning per-sample tensors, plus ``rows``.
Importing this package (or the registry) does not import torch.
"""

from evaluation.metrics.registry import default_groups as _default_groups

# The default groups: ("morf", "faithfulness", "complexity", "gaussian", "square_block"). The opt-in groups
# (``mprt``) are valid names too (registry.groups("evaluate")), computed only where they are named.
METRICS = _default_groups()
