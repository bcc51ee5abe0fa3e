"""What a Tune trainable reports after each epoch: its metrics and, with a state, a checkpoint (torch-free)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable


_BEGUN = False  # has a trial begun in this process (a Tune actor reused for a later trial)?


def trial_begun() -> tuple[float, bool]:
    """(When the calling trial's set-up began, whether its process is fresh): for a process's first trial when
    the process loaded ``trainables`` (the imports of torch, the data and the model are the trial's set-up, as
    ``start_time`` counts them), for a reused actor now."""
    global _BEGUN
    from trainables import LOADED_AT

    fresh, _BEGUN = not _BEGUN, True
    return (LOADED_AT if fresh else time.time()), fresh


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
