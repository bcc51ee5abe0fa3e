"""The search stage (docs/spec.md §6): per (dataset, penalty) an Optuna search inside Ray Tune, then selection.

For every dataset, the ``none`` baseline is searched first, then each penalty: one
:class:`ray.tune.Tuner` per (dataset, penalty), one after the other (Tune's global registry is
not thread-safe, so Tuners are not run from threads), each running up to
``max_concurrent_trials`` trials at once. Each dataset enters the object store once.

- **Search.** :class:`OptunaSearch` with an explicit seeded sampler (TPE by default, which is
  multi-objective capable; NSGA-II or random selectable) proposes λ (log-uniform) and, if the
  space says so, the learning rate. With ``objective: multi`` it maximises (val_acc, val_morf)
  jointly; with a single objective it maximises that metric, and an ASHA scheduler stops weak
  trials early on it. ASHA is *not* used for the multi-objective search: it would cut trials on
  one metric only and hand Optuna truncated trials as if complete (the choice is documented in
  docs/search.md). The ``none`` baseline has no λ: its trials differ by seed only.
- **Seeds.** Trial k (Optuna's trial number in that search) trains with seed ``cfg.seed + k``,
  so every penalty and the baseline see the same seeds.
- **Survives restarts.** Tune's experiment folder (``tune/<dataset>-<penalty>``) is restored with
  :meth:`Tuner.restore` (finished trials are kept, unfinished ones continue from their last epoch
  checkpoint, failed ones stay failed) and Optuna's history lives in a JournalStorage file
  (``optuna/<dataset>-<penalty>.journal``). A finished search leaves ``tune/<name>/search_done.json`` and is not
  touched again.
- **Selection**: :mod:`study.selection`, once the searches are done.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from dataclasses import replace
from functools import partial
from typing import Callable

import numpy as np
import pandas as pd

from foundations import data as data_mod
from foundations import schemas as R
from foundations.schemas import git_commit  # noqa: F401  (re-exported: provenance of every row)
from foundations import seeds, storage
from study import interrupts, journal, saved_config
from foundations.statistics import front_mask
from study.config import StudyConfig
from study.selection import select

OBJECTIVE_METRICS = ("val_acc", "val_morf")
DONE_FILE = "search_done.json"


class SearchInterrupted(RuntimeError):
    """A search stopped before all its trials finished (its state is saved; rerun to resume)."""


def unfinished_trials(cfg: StudyConfig, dataset: str, grid) -> int:
    """How many trials of a returned fit neither reached their epochs nor failed.

    A trial stopped early by ASHA is finished; ASHA stops trials only in a single-objective
    search with ``scheduler: asha`` and at least 2 epochs (see :func:`build_tuner`).
    """
    epochs = cfg.for_dataset(dataset, "epochs")
    asha = cfg.search.objective != "multi" and cfg.search.scheduler == "asha" and epochs >= 2
    n = 0
    for res in grid:
        if res.error is not None:
            continue
        reached = (res.metrics or {}).get("epoch")
        reached = int(reached) if isinstance(reached, (int, float)) and math.isfinite(reached) else 0
        if reached >= epochs or (asha and reached >= 1):
            continue
        n += 1
    return n


def interrupted_rows(cfg: StudyConfig, dataset: str, penalty: str, trials: pd.DataFrame) -> int:
    """How many trials of a search recorded as done never finished: neither failed nor reached their
    epochs (an ASHA stop after >= 1 epoch is finished), plus those missing. 0 for a sound search."""
    if trials.empty:
        return 0
    epochs = cfg.for_dataset(dataset, "epochs")
    asha = cfg.search.objective != "multi" and cfg.search.scheduler == "asha" and epochs >= 2
    done = trials["epochs_done"].fillna(0)
    short = (trials["status"] != "error") & (done < epochs) & ~(asha & (done >= 1))
    return int(short.sum()) + max(0, cfg.n_trials(penalty) - len(trials))


def discard_search(cfg: StudyConfig, dataset: str, penalty: str) -> None:
    """Remove everything a search wrote (Tune experiment, Optuna journal, its trials/epochs files)."""
    key = experiment_name(dataset, penalty)
    storage.delete(storage.join(cfg.location, "tune", key))
    for table in ("trials", "epochs"):
        storage.delete(storage.join(cfg.location, table, f"dataset={dataset}", f"penalty={penalty}"))
    local = journal.journal_dir(cfg.location) / f"{key}.journal"
    local.unlink(missing_ok=True)
    if cfg.remote:
        storage.delete(storage.join(cfg.location, journal.JOURNAL_DIR, f"{key}.journal"))


# --------------------------------------------------------------------------- provenance
def experiment_name(dataset: str, penalty: str) -> str:
    return f"{dataset}-{penalty}"


def sampler_seed(cfg: StudyConfig, dataset: str, penalty: str) -> int:
    """A seed per (study seed, dataset, penalty), stable across processes."""
    return seeds.named(cfg.seed, dataset, penalty, bits=31)


def make_sampler(cfg: StudyConfig, dataset: str, penalty: str):
    import optuna

    seed = sampler_seed(cfg, dataset, penalty)
    if cfg.search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if cfg.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


class OptunaSpace:
    """Define-by-run search space: each of λ and lr is fixed, searched log-uniformly, or on a grid.

    Trial k (Optuna's trial number) with grids of sizes n_1, n_2 … takes grid combination
    ``k % (n_1 n_2 …)`` and seed ``seed0 + k // (n_1 n_2 …)``: every value is crossed with the same
    seeds, and without a grid trial k simply trains with seed ``seed0 + k``. A class (not a closure)
    so that Tune can pickle the searcher with its experiment state.
    """

    def __init__(self, lam, lr, seed0: int):
        self.lam, self.lr, self.seed0 = lam, lr, seed0

    def __call__(self, trial) -> dict:
        from study.config import Space

        out, grids = {}, []
        for name, v in (("lam", self.lam), ("lr", self.lr)):
            kind = Space.kind(v)
            if kind == "range":
                trial.suggest_float(name, v[0], v[1], log=True)
            elif kind == "fixed":
                out[name] = float(v)
            elif kind == "grid":
                grids.append((name, list(v["grid"])))
        combos = list(itertools.product(*(g for _, g in grids)))
        for (name, _), value in zip(grids, combos[trial.number % len(combos)]):
            out[name] = float(value)
        out["seed"] = self.seed0 + trial.number // len(combos)
        return out


def named_trainable(fn: Callable, dataset: str, penalty: str) -> Callable:
    """``fn`` under a name of its own per search (``train_trial[mnist-gradient]``).

    Tune registers a trainable, and ``with_parameters`` its data, in the cluster's key-value store
    under the job and the function's name (``str(fn)``: name and address, which are equal in every
    worker process). Searches that run at once in one job (study/schedule.py) would overwrite each
    other's entries and a trial could train on another search's data; a name per search keeps them
    apart."""

    def trainable(config, splits=None, score=None):
        return fn(config, splits=splits, score=score)

    tag = experiment_name(dataset, penalty)
    trainable.__name__ = f"{fn.__name__}_{tag}".replace("-", "_")
    trainable.__qualname__ = f"{fn.__qualname__}[{tag}]"
    return trainable


def trial_dirname(trial) -> str:
    """Trial folders are named by trial id (so ids can be read back from paths)."""
    return trial.trial_id


def param_space(cfg: StudyConfig, dataset: str, penalty: str) -> dict:
    space = {
        "train": cfg.train_config(dataset, penalty),
        "explain_n": cfg.for_dataset(dataset, "explain_n"),
        "morf_levels": cfg.search.morf_levels,
    }
    if cfg.simulate.enabled:  # the predicted durations of the simulated trainable
        from trainables.simulated import trial_simulation

        space["simulate"] = trial_simulation(cfg, dataset, penalty)
    return space


def search_splits(cfg: StudyConfig, dataset: str) -> data_mod.Splits:
    """The training and validation splits only (the test set stays out of the search)."""
    s = data_mod.load(dataset, cfg.data_path, cfg.training.val_fraction, cfg.training.split_seed)
    empty = s.test_x[:0]
    return replace(s, test_x=empty, test_y=s.test_y[:0])


def trainable_for(cfg: StudyConfig) -> tuple[Callable, dict]:
    """(The trial function, its parameters but the data), imported on first call: the simulated one
    (``--simulate``: the epoch body is a sleep, trainables/simulated.py) imports no torch and takes no data."""
    if cfg.simulate.enabled:
        from trainables.simulated import simulated_trial

        return simulated_trial, {"score": None}
    from evaluation.metrics.morf import explanation_score  # imported here: a simulated search never imports torch
    from trainables.trainable import train_trial

    return train_trial, {"score": explanation_score}


def warm_imports(cfg: StudyConfig) -> None:
    """What the first search would import (the trainable, torch for a real one, Optuna, Tune's Optuna searcher),
    imported before any search is timed: the progress line's ETA scales the profile by the searches' lengths, and
    the first one must not carry the process's one-off imports."""
    import optuna  # noqa: F401
    from ray.tune.search.optuna import OptunaSearch  # noqa: F401

    trainable_for(cfg)


def build_tuner(cfg: StudyConfig, dataset: str, penalty: str, splits, verbose: int = 1):
    """A new Tuner for (dataset, penalty), or the restored one if its experiment folder exists.

    ``splits``: the dataset's :class:`Splits` or an object-store reference to them.
    """
    from study.progress import EpochBoard  # imports Ray Tune: not before the launcher has checked its input

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    # 0: silent, 1: a compact status table every 30 s (Tune's classic reporter), 2: Tune's new output
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose >= 2 else "0"
    progress = {}
    if verbose == 1:
        progress = {
            "progress_reporter": tune.CLIReporter(
                metric_columns=["epoch", "val_acc", "val_morf", "train_loss"],
                parameter_columns=["lam", "lr", "seed"],
                max_report_frequency=30,
                sort_by_metric=False,
            )
        }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fn, params = trainable_for(cfg)
    params["splits"] = None if cfg.simulate.enabled else splits
    trainable = tune.with_resources(
        tune.with_parameters(named_trainable(fn, dataset, penalty), **params),
        {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
    )
    # Tune's storage: the study folder, or the object store (s3://…) through a pyarrow filesystem
    tune_dir, tune_fs = storage.tune_storage(storage.join(cfg.location, "tune"))
    exp_loc = storage.join(cfg.location, "tune", experiment_name(dataset, penalty))
    if storage.exists(exp_loc):
        exp_path, _ = storage.tune_storage(exp_loc)
        if tune.Tuner.can_restore(exp_path, storage_filesystem=tune_fs):
            # trials that never reported have no result file yet: expected here, not worth a warning
            logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
            tuner = tune.Tuner.restore(
                exp_path,
                trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
                storage_filesystem=tune_fs,
            )
            # the saved RunConfig holds the first run's output settings: this run's -q / -v win
            local = getattr(tuner, "_local_tuner", None)
            if local is not None and hasattr(local, "get_run_config"):
                rc = local.get_run_config()
                rc.verbose, rc.progress_reporter = verbose, progress.get("progress_reporter")
                rc.callbacks = [c for c in rc.callbacks or [] if not isinstance(c, EpochBoard)] + [  # this run's board
                    EpochBoard(cfg.location, dataset, penalty, cfg.for_dataset(dataset, "epochs"))]
            return tuner
        storage.delete(exp_loc)  # stopped before Tune saved anything: start again

    space = cfg.space_for(penalty)
    # Optuna's journal needs a local file with working locks: the study folder, or a head-local
    # copy pushed to <location>/optuna/ after every trial when the study writes to an object store
    journal_file = journal.journal_dir(cfg.location) / f"{experiment_name(dataset, penalty)}.journal"
    journal_file.parent.mkdir(parents=True, exist_ok=True)
    single = cfg.search.objective != "multi"
    searcher = OptunaSearch(
        space=OptunaSpace(None if penalty == "none" else space.lam, space.lr, cfg.seed),
        metric=cfg.search.objective if single else list(OBJECTIVE_METRICS),
        mode="max" if single else ["max"] * len(OBJECTIVE_METRICS),
        sampler=make_sampler(cfg, dataset, penalty),
        study_name=f"{cfg.name}/{dataset}/{penalty}",
        storage=JournalStorage(JournalFileBackend(str(journal_file))),
    )
    epochs = cfg.for_dataset(dataset, "epochs")
    if single and cfg.search.scheduler == "asha" and epochs >= 2:
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1, reduction_factor=2)
        tune_metric = {"metric": cfg.search.objective, "mode": "max"}
    else:
        scheduler, tune_metric = FIFOScheduler(), {}
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg, dataset, penalty),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=cfg.n_trials(penalty),
            max_concurrent_trials=cfg.search.max_concurrent_trials,
            reuse_actors=True,  # no process start per trial
            trial_name_creator=trial_dirname,
            trial_dirname_creator=trial_dirname,
            **tune_metric,
        ),
        run_config=tune.RunConfig(
            name=experiment_name(dataset, penalty),
            storage_path=tune_dir,
            storage_filesystem=tune_fs,
            callbacks=[EpochBoard(cfg.location, dataset, penalty, epochs)]  # the progress line's epochs
            + ([journal.journal_sync_callback(cfg.location)] if cfg.remote else []),
            failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=verbose,
            **progress,
        ),
    )


# --------------------------------------------------------------------------- tables
def _error_text(res, last: dict) -> str:
    if last.get("error"):
        return str(last["error"])
    if res.error is None:
        return ""
    lines = [ln.strip() for ln in str(res.error).splitlines() if ln.strip()]
    named = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception", "Interrupt"))]
    return (named or lines or [type(res.error).__name__])[-1][:2000]


def _ts(v) -> pd.Timestamp:
    return pd.to_datetime(v, unit="s", utc=True) if v is not None and np.isfinite(v) else pd.NaT


def tables_from_results(
    cfg: StudyConfig, dataset: str, penalty: str, grid, provenance: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) DataFrames of a finished search, conforming to ``results.TRIALS/EPOCHS``."""
    from trainables.trainable import EPOCH_METRICS, trial_config

    trials, epochs = [], []
    for res in grid:
        trial_loc = storage.location_of(res.filesystem, res.path)
        trial_id = storage.name(trial_loc)
        conf = res.config or json.loads(storage.read_text(storage.join(trial_loc, "params.json")))
        tc = trial_config(conf)
        last = dict(res.metrics or {})
        df = res.metrics_dataframe
        df = df.copy() if df is not None and len(df) else pd.DataFrame({"epoch": pd.Series(dtype=float)})
        if "error" in df:
            df = df[df["error"].fillna("").astype(str) == ""]
        df = df.dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last").sort_values("epoch")
        rows = df.to_dict("records")
        for r in rows:
            epochs.append(
                {
                    "study": cfg.name,
                    "dataset": dataset,
                    "penalty": penalty,
                    "trial_id": trial_id,
                    "epoch": int(r["epoch"]),
                    **{k: float(r.get(k, np.nan)) for k in EPOCH_METRICS if k != "epoch"},
                    "end_time": _ts(r.get("end_time")),
                    "node_id": str(r.get("node_id", "")),
                    "pid": int(r.get("pid", -1)),
                }
            )
        fin = rows[-1] if rows else {}
        status = "error" if res.error is not None else ("ok" if len(rows) >= tc.epochs else "stopped")
        nan = float("nan")
        trials.append(
            {
                "study": cfg.name,
                "dataset": dataset,
                "penalty": penalty,
                "trial_id": trial_id,
                "status": status,
                "error": _error_text(res, last),
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
                "explain_n": int(conf.get("explain_n", 0)),
                "penalty_params": json.dumps(tc.penalty_params, sort_keys=True),
                "train_config": json.dumps(tc.to_dict(), sort_keys=True),
                "sampler_seed": sampler_seed(cfg, dataset, penalty),
                "epochs_done": len(rows),
                **{k: float(fin.get(k, nan)) for k in ("val_acc", "val_morf", "train_loss", "ce", "penalty_value")},
                "best_val_acc": float(df["val_acc"].max()) if rows else nan,
                "best_val_morf": float(df["val_morf"].max()) if rows else nan,
                "train_seconds": float(df["train_seconds"].sum()) if rows else nan,
                "on_pareto_front": False,
                "checkpoint_path": storage.location_of(res.checkpoint.filesystem, res.checkpoint.path)
                if res.checkpoint
                else "",
                "node_id": str(last.get("node_id", "")),
                "hostname": str(last.get("hostname", "")),
                "pid": int(last.get("pid", -1)),
                "start_time": _ts(last.get("start_time")),
                "end_time": _ts(last.get("end_time")),
                **provenance,
            }
        )
    t = pd.DataFrame(trials, columns=R.TRIALS.names)
    ok = t["status"] != "error"
    t["on_pareto_front"] = front_mask(t["val_acc"].where(ok), t["val_morf"].where(ok))
    t = t.sort_values("trial_id").reset_index(drop=True)
    e = pd.DataFrame(epochs, columns=R.EPOCHS.names).sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    return t, e


# --------------------------------------------------------------------------- selection
# --------------------------------------------------------------------------- the stage
def summary_line(trials: pd.DataFrame, seconds: float | None = None) -> str:
    """One line for a finished (dataset, penalty) search."""
    r = trials.iloc[0]
    n_err = int((trials["status"] == "error").sum())
    n_stop = int((trials["status"] == "stopped").sum())  # ASHA's early stops: finished, but not "ok"
    ok = trials[trials["status"] != "error"]
    took = f" in {seconds:.1f} s" if seconds is not None else " (already done)"
    best = f"; best val_acc {ok['val_acc'].max():.4f}, best val_morf {ok['val_morf'].max():.4f}" if len(ok) else ""
    stopped = f", {n_stop} stopped early" if n_stop else ""
    return (
        f"[search] {r['dataset']}/{r['penalty']}: {len(trials)} trials "
        f"({len(trials) - n_err - n_stop} ok{stopped}, {n_err} failed){took}{best}"
    )


def run_one(
    cfg: StudyConfig,
    dataset: str,
    penalty: str,
    data: Callable[[], object],
    provenance: dict,
    verbose: int = 1,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Search one (dataset, penalty), or reuse it if already done, and write its trials/epochs tables.

    Args:
        data: returns the dataset's splits (or their object-store reference); called only if
            the search has to run.
    """
    key = experiment_name(dataset, penalty)
    done_marker = storage.join(cfg.location, "tune", key, DONE_FILE)
    if storage.exists(done_marker):
        t = R.read_table(cfg.location, "trials")
        t = t[(t["dataset"] == dataset) & (t["penalty"] == penalty)]
        n_bad = interrupted_rows(cfg, dataset, penalty, t)
        if len(t) and not n_bad:
            log(summary_line(t))
            return t
        if n_bad:  # marked done by an interrupted run of an older version: search again
            log(f"[search] {dataset}/{penalty}: marked done, but {n_bad} of its trials never finished (an interrupted "
                f"run of an older version); discarding it and searching again")
            discard_search(cfg, dataset, penalty)
    t0 = time.perf_counter()
    for attempt in range(2):
        grid = interrupts.fit(build_tuner(cfg, dataset, penalty, data(), verbose))
        if interrupts.SIGINT_SEEN.is_set():  # even if every trial happened to finish: never go on to the next search
            raise SearchInterrupted(f"Ctrl-C during the {dataset}/{penalty} search; its state is saved")
        short = max(0, cfg.n_trials(penalty) - len(grid)) + unfinished_trials(cfg, dataset, grid)
        if attempt or not short or grid.num_terminated + grid.num_errors < len(grid):
            break
        # nothing interrupted this run, yet trials Tune counts as finished never reached their epochs: an
        # earlier interrupt cut them while Tune saved them, and a restore would never run them again
        log(f"[search] {dataset}/{penalty}: the saved search holds {short} trial(s) an earlier interrupt cut "
            f"short; discarding it and searching again")
        discard_search(cfg, dataset, penalty)
    if short or grid.num_terminated + grid.num_errors < len(grid):  # stopped from outside: Tune saved, returned
        raise SearchInterrupted(
            f"{dataset}/{penalty}: search stopped before all trials finished "
            f"({short or len(grid) - grid.num_terminated - grid.num_errors} unfinished)"
        )
    trials, epochs = tables_from_results(cfg, dataset, penalty, grid, provenance)
    R.write_table(trials, cfg.location, "trials", key=key)
    if len(epochs):
        R.write_table(epochs, cfg.location, "epochs", key=key)
    journal.push_journal(cfg.location)
    storage.write_text(done_marker, json.dumps({"trials": len(trials), "time": time.time()}))
    log(summary_line(trials, time.perf_counter() - t0))
    return trials


def check_output(cfg: StudyConfig) -> None:
    """Save the config in a new study folder, or check that an existing one holds the same search."""
    out = cfg.location
    saved = storage.join(out, "config.yaml")
    kept = None  # the saved evaluation section, kept until the new one's results are complete
    if storage.exists(saved):
        from study.config import config_from_raw, read_saved

        old = config_from_raw(read_saved(out))
        kept = old.evaluation
        a, b = old.search_key(), cfg.search_key()
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            detail = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff)
            raise ValueError(
                f"output: {out} holds study {old.name!r} searched with different settings ({detail}); "
                f"valid choices: --resume to continue it with its saved settings (--set may still change "
                f"resources, concurrency, retries, tolerance, evaluation), another --output for a new study, "
                f"or delete {out} to discard its results and start again"
            )
    elif cfg.remote:
        storage.check_access(out)  # bucket, endpoint and credentials work, before any search
        journal.forget_local_state(out)  # a new study here: journals this head kept from an older one go
    # the data folder as an absolute path, so that a report built from another directory finds the images
    saved_config.save(cfg, evaluation=kept)


def run_search(cfg: StudyConfig, verbose: int = 1, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run (or continue) the whole search stage; returns the ``selected`` table.

    Needs a connected Ray (``ray.init``). Writes ``trials``, ``epochs`` and ``selected`` under
    ``cfg.location`` (a folder or a URI) and exports the selected weights to ``models/``.
    """
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # save Tune's state often (resume)
    # num_to_keep=1 snapshots the experiment at every trial checkpoint: wanted here, do not warn
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    check_output(cfg)
    journal.pull_journal(cfg.location)  # a restarted driver on a new head: the search history back first
    journal.repair_journals(cfg.location, log)  # a torn last record (a crash mid-write) would stop Optuna's writes
    provenance = {"git_commit": git_commit(), "versions": json.dumps(R.package_versions(), sort_keys=True)}
    refs = {}

    def data(dataset: str):  # each dataset goes into the object store once, when first needed
        import ray

        if dataset not in refs:
            refs[dataset] = ray.put(search_splits(cfg, dataset))
        return refs[dataset]

    order = [(d, p) for d in cfg.datasets for p in sorted(cfg.penalties, key=lambda p: p != "none")]  # baseline first
    from study.progress import predicted_searches, search_eta  # imports Ray Tune: after the launcher's checks

    def is_done(d: str, p: str) -> bool:
        return storage.exists(storage.join(cfg.location, "tune", experiment_name(d, p), DONE_FILE))

    warm_imports(cfg)  # the one-off imports and data loads, before any search is timed (the ETA's correction)
    for d in dict.fromkeys(d for d, p in order if not cfg.simulate.enabled and not is_done(d, p)):
        data(d)
    predicted, finished, t_start = predicted_searches(cfg), {}, time.perf_counter()
    for i, (dataset, penalty) in enumerate(order):
        before = is_done(dataset, penalty)
        t0 = time.perf_counter()
        run_one(cfg, dataset, penalty, partial(data, dataset), provenance, verbose, log)
        if before:  # done by an earlier run: its "(already done)" line said it; it says nothing of the speed here
            continue
        finished[dataset, penalty] = time.perf_counter() - t0
        left = search_eta(predicted, finished, {}, order[i + 1:], lanes=1) if i + 1 < len(order) else None
        log(f"[study] {dataset}/{penalty} search done | searches {i + 1}/{len(order)} done; "
            f"{time.perf_counter() - t_start:.0f} s" + (f", search ETA ~{left:.0f} s" if left is not None else ""))
    trials = R.read_table(cfg.location, "trials")
    selected = select(cfg, trials)
    if len(selected):
        R.write_table(selected, cfg.location, "selected", key=cfg.name)
    return selected
