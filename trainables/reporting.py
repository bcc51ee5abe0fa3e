"""What a Tune trainable reports after each epoch: its metrics and, with a state, a checkpoint (torch-free)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable


def node_id() -> str:
    """The Ray node this process runs on ("" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return ""


def report(metrics: dict, state, write: Callable[[object, Path], None], name: str) -> None:
    """``tune.report(metrics)``; with a ``state``, as a checkpoint holding one file ``name`` that ``write`` writes."""
    from ray import tune

    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        write(state, Path(d) / name)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
