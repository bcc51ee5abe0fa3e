"""The simulated trainable: ``train_trial``'s reporting, checkpoints and resume, the epoch body a sleep.

Used when the study runs with ``--simulate`` (``config["simulate"]`` holds the predicted seconds). It
imports no torch, so that many simulated trials fit in one machine's memory: its checkpoint is a JSON
state (``sim_state.json``) and :func:`load_state` turns it into the state the selection exports (an
untrained, seeded model: torch is imported there, in the driver only).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path

from foundations import profile
from trainables import reporting
from trainables.config import DEFAULT_MODEL, TrainConfig

STATE_FILE = "sim_state.json"


# ------------------------------------------------- predicted durations (``cfg``: a study.config.StudyConfig)
def device(cfg) -> str:
    return "gpu" if cfg.resources.gpu > 0 else "cpu"


def _model(cfg, dataset: str) -> str:
    return cfg.for_dataset(dataset, "model") or DEFAULT_MODEL[dataset]


def epoch_seconds(cfg, dataset: str, penalty: str) -> tuple[float, int]:
    """(predicted seconds of one epoch of a (dataset, penalty) trial, its training images), unscaled."""
    prof = profile.load(cfg.simulate.profile)
    n_train, n_val = profile.split_sizes(cfg.for_dataset(dataset, "data_fraction"), cfg.training.val_fraction,
                                         cfg.for_dataset(dataset, "val_limit"))
    s = profile.epoch_seconds(prof, dataset, _model(cfg, dataset), penalty, device(cfg), n_train, n_val,
                              cfg.for_dataset(dataset, "explain_n"))
    return s, n_train


def trial_simulation(cfg, dataset: str, penalty: str) -> dict:
    """The ``simulate`` entry of a trial's config (read by ``trainables.simulated.simulated_trial``)."""
    s, n_train = epoch_seconds(cfg, dataset, penalty)
    prof = profile.load(cfg.simulate.profile)
    return {"epoch_seconds": s, "start_seconds": float(prof.get("trial_start_seconds", 0.0)),
            "actor_start_seconds": float(prof.get("actor_start_seconds", 0.0)), "n_train": n_train,
            "time_scale": cfg.simulate.time_scale}


def trial_seconds(cfg, dataset: str, penalty: str) -> float:
    """Predicted seconds of one trial (set-up + epochs), unscaled."""
    sim = trial_simulation(cfg, dataset, penalty)
    return sim["start_seconds"] + cfg.for_dataset(dataset, "epochs") * sim["epoch_seconds"]


def search_seconds(cfg, dataset: str, penalty: str) -> float:
    """A search's shortest length, unscaled: n trials, c at a time, take ceil(n / c) trial lengths, the first of
    them in fresh actors (their start: imports, data)."""
    waves = math.ceil(cfg.n_trials(penalty) / cfg.search.max_concurrent_trials)
    return waves * trial_seconds(cfg, dataset, penalty) + trial_simulation(cfg, dataset, penalty)["actor_start_seconds"]


def search_work(cfg, dataset: str, penalty: str) -> float:
    """A search's trial-seconds, unscaled: n trials, ``min(n, c)`` of them starting a fresh actor."""
    n = cfg.n_trials(penalty)
    fresh = min(n, cfg.search.max_concurrent_trials) * trial_simulation(cfg, dataset, penalty)["actor_start_seconds"]
    return n * trial_seconds(cfg, dataset, penalty) + fresh


def _report(metrics: dict, state: dict | None) -> None:
    reporting.report(metrics, state, lambda st, path: path.write_text(json.dumps(st)), STATE_FILE)


def simulated_trial(config: dict, splits=None, score=None) -> None:
    """Ray Tune function trainable: per epoch sleep the profile's seconds (x time_scale), report seeded metrics."""
    from ray import tune

    sim = config["simulate"]
    tc = TrainConfig(**{**config["train"], **{k: config[k] for k in ("lam", "lr", "seed") if k in config}})
    epochs, scale = tc.epochs, float(sim["time_scale"])
    info = {"node_id": reporting.node_id(), "hostname": socket.gethostname(), "pid": os.getpid()}
    begun, fresh = reporting.trial_begun()
    start_time, history, epoch = begun, [], 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = json.loads((Path(d) / STATE_FILE).read_text())
        start_time, history, epoch = state["start_time"], state["history"], state["epoch"]
        if epoch >= epochs and history:  # finished before the driver stopped: report it again, as recorded
            _report(history[-1], None)
            return
    else:  # the trial's set-up (data, model); in a fresh actor also what a real one imports (torch) and loads
        profile.sleep(sim.get("start_seconds", 0.0) + (sim.get("actor_start_seconds", 0.0) if fresh else 0.0), scale)
    while epoch < epochs:
        t0 = time.perf_counter()
        slept = profile.sleep(sim["epoch_seconds"], scale)
        epoch += 1
        vals = profile.trial_metrics(tc.dataset, tc.penalty, float(tc.lam), int(tc.seed), epoch, epochs)
        n = max(1, int(sim.get("n_train", 1)))
        rec = {"epoch": epoch, **vals, "train_seconds": slept, "samples_per_s": n / max(slept, 1e-9),
               "morf_seconds": 0.0, "seconds": time.perf_counter() - t0, "start_time": start_time,
               "end_time": time.time(), **info, "error": "", "torch_imported": "torch" in sys.modules}
        history.append(rec)
        _report(rec, {"start_time": start_time, "history": history, "epoch": epoch, "model": tc.model, "seed": tc.seed})


def is_simulated(checkpoint_dir) -> bool:
    from foundations import storage

    return storage.exists(storage.join(storage.normalize(checkpoint_dir), STATE_FILE))


def load_state(checkpoint_dir) -> dict:
    """A simulated checkpoint as the state the selection exports: an untrained model seeded by the trial."""
    import torch

    from foundations import storage
    from trainables.models import build_model

    state = json.loads(storage.read_text(storage.join(storage.normalize(checkpoint_dir), STATE_FILE)))
    torch.manual_seed(int(state["seed"]))
    model = build_model(state["model"])
    return {"run": {"model": model.state_dict()}, "start_time": state["start_time"], "history": state["history"]}
