"""The study's saved ``config.yaml``: it describes the results in the folder, so a changed ``evaluation:``
section is saved only once the evaluation stage has completed that section's results (evaluation/stage.py
keeps the old results until then)."""

from __future__ import annotations

from dataclasses import replace

from foundations import storage
from study.config import SAVED, StudyConfig, dump_config


def save(cfg: StudyConfig, evaluation=None, log=print) -> None:
    """Write ``cfg`` as the study's config.yaml; ``evaluation``: the section to keep (the saved one) instead
    of ``cfg``'s, whose results are not complete yet. The data folder is saved as an absolute path."""
    if evaluation is not None and evaluation != cfg.evaluation:
        log("[study] other evaluation settings: config.yaml keeps the current ones until the evaluation stage "
            "has completed the new results")
        cfg = replace(cfg, evaluation=evaluation)
    cfg = cfg if cfg.data_root else replace(cfg, data_root=str(cfg.data_path))
    storage.write_text(storage.join(cfg.location, SAVED), dump_config(cfg))


def evaluation_done(cfg: StudyConfig) -> None:
    """The evaluation stage completed ``cfg``'s results: config.yaml now records its evaluation section."""
    save(cfg)
