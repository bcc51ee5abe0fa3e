"""Simulated studies: the timing profile, the scaled sleep and seed-deterministic metric values (no torch).

A **profile** (``profiles/*.yaml``, built by ``python -m study.profile``) holds measured costs:

- ``epochs``: per (dataset, model, penalty, device) the mean seconds of a training epoch as measured
  (``epoch_seconds``), split into per-image costs so that other data sizes scale: ``train_s_per_image``
  (training), ``val_s_per_image`` (validation accuracy), ``morf_s_per_image`` (the explanation score);
- ``models``: the relative cost of models the profile did not measure (``cnn4b: {like: cnn3b, factor: 23}``);
- ``trial_start_seconds``: per-trial time outside the epochs (data, model set-up, checkpoints) in a reused actor;
- ``actor_start_seconds``: what a trial in a fresh actor adds to that (the imports of torch and the trainable,
  the data from the object store); a simulated trial sleeps it, since it imports neither;
- ``evaluation``: ``metrics_s_per_image_method`` (a metric chunk, per image and attribution method),
  ``ranks_s_per_image`` (a ROAR ranking, per training image), ``roar_s_per_image_epoch`` (a ROAR retrain).

The trainable (``trainables/simulated.py``) and the stage's tasks (``evaluation/simulated.py``) sleep
``seconds * time_scale`` and report values from :func:`trial_metrics` / :func:`uniform`, deterministic in
the study's seeds, so selection and every table work as in a real run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from foundations import seeds

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROFILE = REPO_ROOT / "profiles" / "default.yaml"
TRAIN_IMAGES = 60_000  # training split of MNIST and Fashion-MNIST before the validation carve
PROFILE_FORMS = "a profile YAML written by `python -m study.profile` (e.g. profiles/default.yaml)"


class ProfileError(ValueError):
    """A missing or malformed profile (one line, names the file and what is wrong)."""


@dataclass
class Simulation:
    """The ``simulate`` section: ``profile`` ('' = a real run) and ``time_scale`` (every simulated duration x F)."""

    profile: str = ""
    time_scale: float = field(default=1.0, metadata={"runtime": True})  # may change on --resume

    def __post_init__(self) -> None:
        if not (isinstance(self.time_scale, (int, float)) and self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise ValueError(f"simulate.time_scale: must be a number > 0 (0.05 = 20x faster), got {self.time_scale!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.profile)


_CACHE: dict[str, dict] = {}


def load(path: str | Path) -> dict:
    """The profile at ``path`` (checked; cached per process); raises :class:`ProfileError`."""
    key = str(path)
    if key in _CACHE:
        return _CACHE[key]
    p = Path(path)
    if not p.is_file():
        raise ProfileError(f"--simulate: profile {key} not found; valid choices: {PROFILE_FORMS}")
    try:
        prof = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"--simulate: profile {key} is not YAML ({str(exc).splitlines()[0]}); "
                           f"valid choices: {PROFILE_FORMS}") from None
    check(prof, key)
    _CACHE[key] = prof
    return prof


def check(prof, where: str = "profile") -> None:
    """Raise :class:`ProfileError` unless ``prof`` has the keys and positive numbers a simulation needs."""
    def bad(what: str) -> ProfileError:
        return ProfileError(f"--simulate: profile {where}: {what}; valid choices: {PROFILE_FORMS}")

    if not isinstance(prof, dict):
        raise bad("not a mapping")
    rows = prof.get("epochs")
    if not isinstance(rows, list) or not rows:
        raise bad("`epochs` must be a non-empty list of (dataset, model, penalty, device) rows")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise bad(f"epochs[{i}] is not a mapping")
        for k in ("dataset", "model", "penalty", "device"):
            if not isinstance(r.get(k), str):
                raise bad(f"epochs[{i}].{k} must be a string")
        for k in ("epoch_seconds", "train_s_per_image", "val_s_per_image", "morf_s_per_image"):
            if not _number(r.get(k)):
                raise bad(f"epochs[{i}].{k} must be a number >= 0")
    ev = prof.get("evaluation")
    if not isinstance(ev, dict):
        raise bad("`evaluation` must be a mapping")
    for k in ("metrics_s_per_image_method", "ranks_s_per_image", "roar_s_per_image_epoch"):
        if not _number(ev.get(k)):
            raise bad(f"evaluation.{k} must be a number >= 0")
    for key in ("trial_start_seconds", "actor_start_seconds"):
        if not _number(prof.get(key, 0)):
            raise bad(f"{key} must be a number >= 0")
    for name, m in (prof.get("models") or {}).items():
        if not (isinstance(m, dict) and isinstance(m.get("like"), str) and _number(m.get("factor"))):
            raise bad(f"models.{name} must be {{like: MODEL, factor: NUMBER}}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def epoch_row(prof: dict, dataset: str, model: str, penalty: str, device: str) -> tuple[dict, float]:
    """The profile's row for a trial and the factor to apply (a model measured only through ``models``)."""
    rows = prof["epochs"]
    factor = 1.0
    like = (prof.get("models") or {}).get(model)
    if not any(r["model"] == model for r in rows) and like:
        model, factor = like["like"], float(like["factor"])
    for keys in ((dataset, model, penalty, device), (dataset, model, penalty, None), (None, model, penalty, None),
                 (None, model, None, None), (None, None, penalty, None)):
        match = [r for r in rows if all(k is None or r[f] == k for k, f in
                                        zip(keys, ("dataset", "model", "penalty", "device")))]
        if match:
            return match[0], factor
    return rows[0], factor


def epoch_seconds(prof: dict, dataset: str, model: str, penalty: str, device: str,
                  n_train: int, n_val: int, explain_n: int) -> float:
    """Predicted seconds of one training epoch (training, validation accuracy, explanation score)."""
    r, f = epoch_row(prof, dataset, model, penalty, device)
    return f * (r["train_s_per_image"] * n_train + r["val_s_per_image"] * n_val + r["morf_s_per_image"] * explain_n)


def split_sizes(data_fraction: float, val_fraction: float, val_limit: int) -> tuple[int, int]:
    """(training images of a trial, validation images of its accuracy) for a dataset of 60 000 training images."""
    n_val_all = round(TRAIN_IMAGES * val_fraction)
    n_train = max(1, round((TRAIN_IMAGES - n_val_all) * data_fraction))
    return n_train, (min(val_limit, n_val_all) if val_limit else n_val_all)


def metrics_seconds(prof: dict, n_images: int, n_methods: int) -> float:
    return prof["evaluation"]["metrics_s_per_image_method"] * n_images * max(1, n_methods)


def ranks_seconds(prof: dict, n_train: int) -> float:
    return prof["evaluation"]["ranks_s_per_image"] * n_train


def roar_seconds(prof: dict, n_train: int, epochs: int) -> float:
    return prof["evaluation"]["roar_s_per_image_epoch"] * n_train * max(1, epochs)


def sleep(seconds: float, time_scale: float) -> float:
    """Sleep ``seconds * time_scale``; returns the seconds slept."""
    s = max(0.0, float(seconds) * float(time_scale))
    time.sleep(s)
    return s


def uniform(seed: int, *key) -> float:
    """A number in [0, 1), the same for the same seed and key in every process."""
    return seeds.named(seed, *key, bits=32) / 2**32


def trial_metrics(dataset: str, penalty: str, lam: float, seed: int, epoch: int, epochs: int) -> dict:
    """Plausible epoch metrics, deterministic in (dataset, penalty, λ, seed, epoch): accuracy rises with the
    epochs and falls with λ; the explanation score rises with log λ; a little seeded noise on both."""
    base = 0.97 if dataset == "mnist" else 0.85
    progress = 1.0 - 0.5 ** max(1, epoch)
    strength = 0.0 if penalty == "none" else max(0.0, min(1.0, (math.log10(max(lam, 1e-6)) + 3) / 4))
    u1, u2 = uniform(seed, dataset, penalty, f"{lam:.6g}", epoch, "acc"), uniform(seed, dataset, penalty,
                                                                                  f"{lam:.6g}", epoch, "morf")
    acc = base * (0.85 + 0.15 * progress) - 0.04 * strength ** 2 + 0.01 * (u1 - 0.5)
    morf = 0.6 + 0.15 * strength + 0.02 * (u2 - 0.5)
    loss = -math.log(max(acc, 1e-6))
    return {"train_loss": loss + 0.1 * strength, "ce": loss, "penalty_value": 0.1 * strength,
            "val_acc": min(acc, 1.0), "val_morf": morf}
