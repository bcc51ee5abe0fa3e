"""Explanation and robustness metrics (SPEC §5), one module per metric.

Each module defines ``NAME``, ``HIGHER_IS_BETTER``, ``REFERENCE`` and a function
``(model, x, y, attributions, ..., seed)`` returning per-sample tensors.
"""

METRICS = ("morf", "faithfulness", "complexity", "gaussian", "square_block")
