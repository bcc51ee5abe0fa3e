"""A small real study folder for the analysis and report tests (built in seconds on 2 CPUs).

Everything in it is computed for real, with the project's own code, on 1% of MNIST:

- search: ``TRIALS`` trials per penalty trained with :class:`trainables.train.TrainRun` (1 epoch)
  and scored with the search's explanation score (:func:`evaluation.metrics.morf.explanation_score`);
  the ``trials``/``epochs`` tables are written with ``foundations.schemas`` (its schemas), and the
  selection rule and weight export are the search stage's own :func:`study.selection.select`
  (Ray Tune itself is not started: it costs a minute and a half here, see tests/study/test_search*);
- evaluation: the evaluation stage's task bodies (:mod:`evaluation.stage`: ``plan``,
  ``metrics_task``, ``ranks_task``, ``roar_task``, ``write_curves``) called in this process
  instead of as Ray tasks, on ``N_EVAL`` test images per selected model and ROAR for Saliency
  (plus the stage's random control) at ``ROAR_FRACTIONS`` × ``ROAR_REPEATS``; they write the
  ``evaluation``, ``roar`` and ``curves`` tables in the stage's own layout (per-sample test accuracy
  included: the stage's metrics task writes it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

DATASET = "mnist"
PENALTIES = ("none", "gradient")
TRIALS = 2
LAMS = (0.1, 3.0)
DATA_FRACTION = 0.01
N_EVAL = 40
METHODS = ("saliency", "input_x_gradient")
ROAR_METHODS = ("saliency",)
ROAR_N_TEST = 200
ROAR_FRACTIONS = (0.1, 0.5, 0.9)
ROAR_REPEATS = 2
NAME = "tiny"


def study_config(root: Path):
    from study.config import load_config

    return load_config(None, [
        f"name={NAME}", f"output={root}", f"datasets=[{DATASET}]", f"penalties=[{', '.join(PENALTIES)}]",
        f"trials={TRIALS}", "epochs=1", f"data_fraction={DATA_FRACTION}", "val_limit=500", "explain_n=50",
        f"evaluation.methods=[{', '.join(METHODS)}]", f"evaluation.n_samples={N_EVAL}",
        f"evaluation.roar.fractions=[{', '.join(map(str, ROAR_FRACTIONS))}]", f"evaluation.roar.repeats={ROAR_REPEATS}",
    ])


def _trial_rows(cfg, splits, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from foundations import schemas
    from foundations.schemas import git_commit, package_versions
    from foundations.data import to_float
    from trainables.train import TrainConfig, TrainRun
    from evaluation.metrics.morf import explanation_score

    trials, epochs = [], []
    provenance = {"git_commit": git_commit(), "versions": json.dumps(package_versions(), sort_keys=True)}
    x_explain = to_float(splits.val_x[: cfg.search.explain_n])
    for penalty in PENALTIES:
        for k in range(TRIALS):
            tc = TrainConfig(**{**cfg.train_config(DATASET, penalty), "lam": 0.0 if penalty == "none" else LAMS[k],
                                "seed": cfg.seed + k, "device": "cpu"})
            run = TrainRun(
                tc, splits,
                extra_metrics=lambda m, _s: {"val_morf": explanation_score(m, x_explain, cfg.search.morf_levels)},
            )
            start = pd.Timestamp.now(tz="UTC")
            rec = run.run_epoch()
            trial_id = f"{penalty[:4]}{k:04d}"
            ckpt = root / "tune" / f"{DATASET}-{penalty}" / trial_id / "checkpoint_000000"
            ckpt.mkdir(parents=True, exist_ok=True)
            torch.save({"run": run.state_dict(), "start_time": start.timestamp(), "history": [rec]}, ckpt / "state.pt")
            row = {n: None for n in schemas.TRIALS.names}
            row.update(
                {
                    "study": cfg.name,
                    "dataset": DATASET,
                    "penalty": penalty,
                    "trial_id": trial_id,
                    "status": "ok",
                    "error": "",
                    "model": tc.model,
                    "lam": tc.lam,
                    "lr": tc.lr,
                    "seed": tc.seed,
                    "optimizer": tc.optimizer,
                    "batch_size": tc.batch_size,
                    "epochs": tc.epochs,
                    "data_fraction": tc.data_fraction,
                    "val_fraction": tc.val_fraction,
                    "val_limit": tc.val_limit,
                    "split_seed": tc.split_seed,
                    "explain_n": cfg.search.explain_n,
                    "penalty_params": json.dumps(tc.penalty_params, sort_keys=True),
                    "train_config": json.dumps(tc.to_dict(), sort_keys=True),
                    "sampler_seed": 0,
                    "epochs_done": 1,
                    "val_acc": rec["val_acc"],
                    "val_morf": rec["val_morf"],
                    "train_loss": rec["train_loss"],
                    "ce": rec["ce"],
                    "penalty_value": rec["penalty_value"],
                    "best_val_acc": rec["val_acc"],
                    "best_val_morf": rec["val_morf"],
                    "train_seconds": rec["train_seconds"],
                    "on_pareto_front": False,
                    "checkpoint_path": str(ckpt),
                    "node_id": "local",
                    "hostname": "test",
                    "pid": 0,
                    "start_time": start,
                    "end_time": pd.Timestamp.now(tz="UTC"),
                    **provenance,
                }
            )
            trials.append(row)
            epochs.append(
                {
                    "study": cfg.name,
                    "dataset": DATASET,
                    "penalty": penalty,
                    "trial_id": trial_id,
                    "epoch": 1,
                    "train_loss": rec["train_loss"],
                    "ce": rec["ce"],
                    "penalty_value": rec["penalty_value"],
                    "val_acc": rec["val_acc"],
                    "val_morf": rec["val_morf"],
                    "train_seconds": rec["train_seconds"],
                    "samples_per_s": rec["samples_per_s"],
                    "morf_seconds": 0.0,
                    "seconds": rec["seconds"],
                    "end_time": pd.Timestamp.now(tz="UTC"),
                    "node_id": "local",
                    "pid": 0,
                }
            )
    t = pd.DataFrame(trials, columns=schemas.TRIALS.names)
    from foundations.statistics import front_mask as pareto_mask

    for _, g in t.groupby("penalty"):
        t.loc[g.index, "on_pareto_front"] = pareto_mask(g["val_acc"], g["val_morf"])
    return t, pd.DataFrame(epochs, columns=schemas.EPOCHS.names)


def build_tiny_study(root: Path, splits, *, evaluate: bool = True, log=print) -> Path:
    """Write the tiny study under ``root`` (see the module docstring); returns ``root``.

    ``evaluate=False`` stops after the search (a partial study: no evaluation tables).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster, and far faster on a busy machine
    try:
        return _build(Path(root), splits, evaluate, log)
    finally:
        torch.set_num_threads(threads)


def _build(root: Path, splits, evaluate: bool, log) -> Path:
    from evaluation import stage
    from foundations import schemas
    from study.config import dump_config
    from study.selection import select

    t0 = time.perf_counter()
    c0 = time.process_time()
    root.mkdir(parents=True, exist_ok=True)
    cfg = study_config(root)
    (root / "config.yaml").write_text(dump_config(cfg))
    trials, epochs = _trial_rows(cfg, splits, root)
    schemas.write_table(trials, root, "trials", key=NAME)
    schemas.write_table(epochs, root, "epochs", key=NAME)
    selected = select(cfg, trials)
    schemas.write_table(selected, root, "selected", key=NAME)
    t1 = time.perf_counter()
    if not evaluate:
        log(f"[tiny study] search {t1 - t0:.1f} s -> {root}")
        return root

    # the evaluation stage's own task bodies, run in this process instead of as Ray tasks
    # (its ``_node`` asks Ray for the node id, which would start a local Ray outside a cluster)
    node, stage._node = stage._node, lambda: ("local", os.getpid())
    try:
        _evaluate(cfg, selected, splits, root)
    finally:
        stage._node = node
    log(
        f"[tiny study] search {t1 - t0:.1f} s, evaluation + ROAR {time.perf_counter() - t1:.1f} s "
        f"(CPU {time.process_time() - c0:.0f} s) -> {root}"
    )
    return root


def _evaluate(cfg, selected, splits, root: Path) -> None:
    from evaluation import stage, tables
    from tests.evaluation.stage_fixtures import settings_with

    s = settings_with(
        stage.settings_from_config(cfg),
        chunk_size=N_EVAL,
        roar_methods=list(ROAR_METHODS),
        roar_data_fraction=DATA_FRACTION,
        roar_n_test=ROAR_N_TEST,
        cpu=1.0,
    )
    from foundations import model_paths

    rows = {stage.model_id(r): model_paths.resolve_row(root, r.to_dict()) for _, r in selected.iterrows()}
    ranks = {}
    for task in stage.plan_tasks(selected, s, n_test=len(splits.test_y)):
        row = rows[task.model_id]
        if task.kind == "metrics":
            stage.metrics_task(task, row, splits, s, str(root))
            continue
        key = (task.model_id, task.method)
        if key not in ranks:
            ranks[key] = stage.ranks_task(row, splits, task.method, s)
        stage.roar_task(task, row, splits, ranks[key], s, str(root))
    tables.write_curves(root, cfg.name)
