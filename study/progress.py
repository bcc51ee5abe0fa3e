"""Epochs of the running trials and the searches' ETA, for the study's progress line.

Each search's Tuner (in its own Ray task under the concurrent schedule) gets a :class:`EpochBoard`
callback that keeps, for each of its running trials, the epochs done, the epochs planned and the
training seconds so far in Ray's key-value store (one small JSON value per search, rewritten per
epoch). The driver reads them with :func:`running_trials` and :func:`describe` shows them as
``mnist/gradient#3 1/4 epochs, ETA ~120 s``: the ETA is the remaining epochs at the mean time of
the epochs so far (an upper bound when ASHA stops the trial early).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ray.tune import Callback

if TYPE_CHECKING:
    from study.config import StudyConfig

NAMESPACE = "saliency-progress"


def board_key(location: str, dataset: str, penalty: str) -> bytes:
    return f"{location}|{dataset}/{penalty}".encode()


class EpochBoard(Callback):
    """Tune callback: the running trials of one search and their epochs, kept in Ray's KV store."""

    def __init__(self, location: str, dataset: str, penalty: str, epochs: int) -> None:
        self.key, self.epochs = board_key(location, dataset, penalty), epochs
        self.trials: dict[str, list] = {}

    def _put(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_initialized, _internal_kv_put

        if _internal_kv_initialized():
            _internal_kv_put(self.key, json.dumps(self.trials), overwrite=True, namespace=NAMESPACE)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.trials.setdefault(str(trial.trial_id), [0, self.epochs, 0.0])
        self._put()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.trials[str(trial.trial_id)] = [int(result.get("training_iteration") or 0), self.epochs,
                                            float(result.get("time_total_s") or 0.0)]
        self._put()

    def _gone(self, trial) -> None:
        if self.trials.pop(str(trial.trial_id), None) is not None:
            self._put()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._gone(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._gone(trial)

    def on_experiment_end(self, trials, **info) -> None:
        self.trials.clear()
        self._put()


def running_trials(location: str, searches) -> list[tuple[str, int, int, float]]:
    """``(dataset/penalty#trial, epochs done, epochs planned, seconds)`` of each running trial of ``searches``."""
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return []
    out = []
    for dataset, penalty in searches:
        raw = _internal_kv_get(board_key(location, dataset, penalty), namespace=NAMESPACE)
        for tid, (done, total, secs) in sorted(json.loads(raw or b"{}").items()):
            out.append((f"{dataset}/{penalty}#{tid}", int(done), int(total), float(secs)))
    return out


def describe(trials: list[tuple[str, int, int, float]], most: int = 4) -> str:
    """``; trials: a 1/4 epochs, ETA ~120 s, b 0/4 epochs`` (at most ``most`` named, then a count)."""
    if not trials:
        return ""
    parts = []
    for name, done, total, secs in trials[:most]:
        eta = f", ETA ~{secs / done * max(0, total - done):.0f} s" if done else ""
        parts.append(f"{name} {done}/{total} epochs{eta}")
    more = f", {len(trials) - most} more" if len(trials) > most else ""
    return "; trials: " + ", ".join(parts) + more


# --------------------------------------------------------------------------- the searches' ETA
def predicted_searches(cfg: StudyConfig) -> dict[tuple[str, str], float]:
    """Per (dataset, penalty), the search's length the timing profile predicts (the simulation's own, else
    ``profiles/default.yaml``): :func:`trainables.simulated.search_seconds`, as the lower bound counts them; {} when no
    profile can be read."""
    from dataclasses import replace

    from foundations import profile
    from trainables.simulated import search_seconds

    scale = cfg.simulate.time_scale if cfg.simulate.enabled else 1.0
    c = cfg if cfg.simulate.enabled else replace(cfg, simulate=replace(cfg.simulate,
                                                                        profile=str(profile.DEFAULT_PROFILE)))
    try:
        return {(d, p): search_seconds(c, d, p) * scale for d in cfg.datasets for p in cfg.penalties}
    except (OSError, ValueError, KeyError, TypeError):  # (ProfileError is a ValueError)
        return {}


def search_eta(predicted: dict, finished: dict, running: dict, waiting: list, lanes: int) -> float | None:
    """Seconds until the last search ends: each search's predicted length times what the finished searches
    took against their prediction (1 before any finished), less the running searches' elapsed seconds, laid
    longest first on ``lanes`` searches at a time. None without a prediction for every search named."""
    if not predicted or any(k not in predicted for k in (*finished, *running, *waiting)):
        return None
    expected = sum(predicted[k] for k in finished)
    ratio = sum(finished.values()) / expected if finished and expected > 0 else 1.0
    loads = [max(0.0, ratio * predicted[k] - elapsed) for k, elapsed in running.items()]
    loads += [0.0] * max(0, lanes - len(loads))
    for w in sorted((ratio * predicted[k] for k in waiting), reverse=True):
        i = loads.index(min(loads))
        loads[i] += w
    return max(loads, default=0.0)
