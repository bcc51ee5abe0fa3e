"""The Ray Tune function trainable of the search: one :class:`TrainRun`, reported every epoch.

The trial's ``config`` (built by ``study.search``) holds::

    {"train": {...TrainConfig fields...},      # fixed for the search
     "lam": λ, "lr": lr, "seed": seed,          # chosen per trial (Optuna / trial number)
     "explain_n": 200, "morf_levels": 20}       # the validation explanation score

The data arrive once through the object store (``tune.with_parameters(train_trial, splits=...)``).
Each epoch reports, with a checkpoint of model + optimiser + history: train loss, CE, penalty,
validation accuracy, the explanation score ``val_morf`` (mean MoRF score of Saliency maps on the
first ``explain_n`` validation images, docs/spec.md §6), timings, wall-clock ``start_time``/``end_time``
(UNIX seconds; ``start_time`` is the trial's first start, kept across restores: in a fresh actor when its
process loaded ``trainables``, so the imports, the data and the model set-up count), node id, host
and pid. A restored trial continues from ``tune.get_checkpoint()``.

A diverging trial (:class:`NonFiniteLossError`) reports its reason once (``error``, NaN metrics)
with a marker checkpoint and raises: Tune records the trial as failed, the study goes on, and a
retry restored from the marker fails at once instead of retraining.
"""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from foundations.data import Splits, to_float
from trainables import reporting
from trainables.config import PENALTY_VALUE_COLUMNS as PENALTY_COLUMNS
from trainables.config import TrainConfig

if TYPE_CHECKING:  # torch is imported where a trial trains: the search process of a simulated study has none
    import torch

STATE_FILE = "state.pt"
EPOCH_METRICS = (
    "epoch",
    "train_loss",
    "ce",
    "penalty_value",
    "val_acc",
    "val_morf",
    "train_seconds",
    "samples_per_s",
    "morf_seconds",
    "seconds",
    *PENALTY_COLUMNS,  # every penalty's value on the fixed validation batch
)


def trial_config(config: dict) -> TrainConfig:
    """The TrainConfig of a trial config (fixed ``train`` part + the trial's λ, lr and seed)."""
    train = dict(config["train"])
    for key in ("lam", "lr", "seed"):
        if key in config:
            train[key] = config[key]
    return TrainConfig(**train)


def _cpus() -> int:
    from ray import tune

    try:
        res = tune.get_context().get_trial_resources().required_resources
        return max(1, int(res.get("CPU", 1)))
    except Exception:  # not inside Tune
        return max(1, os.cpu_count() or 1)


def _report(metrics: dict, state: dict | None) -> None:
    import torch

    reporting.report(metrics, state, torch.save, STATE_FILE)


def load_state(checkpoint_dir: str | Path) -> dict:
    """The saved trial state (run, history, start_time[, diverged]) of a checkpoint folder
    (a local path or a URI such as ``s3://bucket/…/checkpoint_000001``)."""
    from foundations import storage
    from trainables import simulated

    if simulated.is_simulated(checkpoint_dir):  # a simulated study's checkpoint (--simulate)
        return simulated.load_state(checkpoint_dir)
    import torch

    data = storage.read_bytes(storage.join(storage.normalize(checkpoint_dir), STATE_FILE))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def train_trial(config: dict, splits: Splits, score: Callable[[torch.nn.Module, torch.Tensor, int], float]) -> None:
    """Ray Tune function trainable: train ``trial_config(config)`` on ``splits``, report each epoch.

    Args:
        config: the trial's config (see the module docstring).
        splits: the dataset, passed once through the object store by ``tune.with_parameters``.
        score: the validation explanation score ``score(model, x, levels)`` (the search passes
            ``evaluation.metrics.morf.explanation_score``; this layer does not import the evaluation).
    """
    begun, _ = reporting.trial_begun()  # before torch is imported: the set-up is the trial's
    import torch
    from ray import tune

    from trainables.train import NonFiniteLossError, TrainRun

    torch.set_num_threads(_cpus())
    cfg = trial_config(config)
    n_explain = int(config.get("explain_n", 200))
    levels = int(config.get("morf_levels", 20))
    run = TrainRun(cfg, splits)
    x_explain = to_float(splits.val_x[:n_explain]).to(run.device)

    def extra(model, _splits) -> dict:
        t0 = time.perf_counter()
        value = score(model, x_explain, levels)
        return {"val_morf": value, "morf_seconds": time.perf_counter() - t0}

    run.extra_metrics = extra
    info = {"node_id": reporting.node_id(), "hostname": socket.gethostname(), "pid": os.getpid()}
    start_time, history = begun, []

    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_state(d)
        if state.get("diverged"):
            raise NonFiniteLossError(state["diverged"])
        run.load_state_dict(state["run"])
        start_time, history = state["start_time"], state["history"]
        if run.epoch >= cfg.epochs and history:  # finished before the driver stopped: report it again
            _report(history[-1], None)  # as recorded (same times), so nothing looks retrained
            return

    while run.epoch < cfg.epochs:
        try:
            rec = run.run_epoch()
        except NonFiniteLossError as exc:
            nan = {k: float("nan") for k in EPOCH_METRICS}
            _report(
                {
                    **nan,
                    "epoch": run.epoch + 1,
                    "start_time": start_time,
                    "end_time": time.time(),
                    **info,
                    "error": f"NonFiniteLossError: {exc}",
                },
                {"diverged": str(exc), "start_time": start_time, "history": history},
            )
            raise
        rec = {**rec, "start_time": start_time, "end_time": time.time(), **info, "error": ""}
        history.append(rec)
        _report(rec, {"run": run.state_dict(), "start_time": start_time, "history": history})
