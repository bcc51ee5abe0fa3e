"""One study, one schedule: every search and every evaluation task share the cluster at once.

:func:`run_study` runs the search stage and the evaluation stage together:

- **All searches at once.** Each (dataset, penalty) search is its own :class:`ray.tune.Tuner`, run
  by :func:`search.run_one` inside a zero-CPU Ray task pinned to the driver's node (Tune's registry
  is per process, so one Tuner at a time per worker process; a finished search's process runs a later
  search, so torch, Tune and Optuna are imported once per process, not once per search). Each keeps its own
  Optuna sampler, journal and ``max_concurrent_trials``; its trials compete for the cluster's slots
  with every other search's trials and every evaluation task, so no slot idles while work is left.
  A search's proposals depend only on its own history and seed (its own Tuner, sampler and
  journal), never on which searches run beside it. At most ``max_concurrent_searches`` run at once
  (default: enough to fill the cluster, see :func:`search_limit`), the baselines first.
- **Evaluation as soon as a model exists.** When a penalty's search is done and its dataset's
  ``none`` search too, the penalty's model is selected (the rule needs only those two searches) and
  its evaluation tasks (metric chunks, ROAR ranks and retrains; for the baseline also the dataset's
  random-ranking control and clean retrains) enter the same cluster while other searches still run.
- **Same outputs, same guarantees.** The trials, epochs and selected tables, the exported models and
  the evaluation tables are those of the sequential schedule (``search.run_search`` then
  ``evaluation.stage.run``), row for row but times, ids and nodes: the ``selected`` table is
  written once at the end by the same :func:`selection.select` (its dataset-wide Pareto column needs
  every search). A killed driver loses nothing finished: a search's Tune/Optuna state and an
  evaluation task's file are written as they finish, and a rerun restores the unfinished searches
  and submits only the missing evaluation files.

Progress: one line per event (a search started or finished, a model selected, evaluation progress
every 30 s), each with the whole study's state: searches done/running/waiting, busy slots of the
cluster, evaluation tasks done/running/queued, elapsed time and an ETA.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

import pandas as pd

from foundations import schemas as R
from foundations import storage
from study import interrupts, journal, progress, search, selection
from study.progress import predicted_searches, search_eta
from study.config import StudyConfig


STOP_WAIT_S = 60.0  # after Ctrl-C, how long the driver waits for the cancelled searches to save and end


def _slots(cfg: StudyConfig, cluster_cpus: float) -> int:
    """Trials the study may run at once: ``search.max_concurrent_total``, or the cluster's CPUs / CPUs per trial."""
    return cfg.search.max_concurrent_total or max(1, int(cluster_cpus / max(cfg.resources.cpu, 1e-9)))


def chosen(cfg: StudyConfig, cluster_cpus: float) -> tuple[str, str]:
    """The schedule a run uses and why: ``search.schedule``, or for ``auto`` the concurrent schedule where one
    search cannot fill the cluster's slots and the sequential one where it can (a laptop: a second search or an
    evaluation task beside the trials only adds its control process's CPU work to the same cores; measured on
    2 cores, `quick` took 1.5x as long concurrent, docs/search.md)."""
    if cfg.search.schedule != "auto":
        return cfg.search.schedule, "search.schedule"
    slots, one = _slots(cfg, cluster_cpus), cfg.search.max_concurrent_trials
    if slots > one:
        return "concurrent", f"auto: {slots} slots, one search fills {one}"
    return "sequential", f"auto: one search's {one} trials at once fill the {slots} slot(s)"


def search_limit(cfg: StudyConfig, cluster_cpus: float) -> int:
    """Searches running at once: ``cfg.search.max_concurrent_searches``, or (0) enough searches to fill the
    study's slots (``cfg.search.max_concurrent_total`` trials, default the cluster's CPUs / CPUs per trial),
    plus one whose queued trials fill the tails of the others; one search when one alone fills every slot
    (a laptop: a second search would only add its controller's CPU work to the same cores)."""
    if cfg.search.max_concurrent_searches:
        return cfg.search.max_concurrent_searches
    n = max(1, math.ceil(_slots(cfg, cluster_cpus) / cfg.search.max_concurrent_trials))
    return n + 1 if n > 1 else 1


def planned_evaluation(cfg: StudyConfig, settings) -> str:
    """The evaluation stage's plan (``evaluation.stage.describe_plan``) for the whole study, before any model
    exists: the models the selection rule will pick (every seed of a penalty whose seeds are replicates, else
    one per (dataset, penalty)); trials that fail can only make it smaller."""
    from evaluation import stage

    rows = [
        {"dataset": d, "penalty": p, "trial_id": f"{d}-{i}"}  # model ids unique per dataset
        for d in cfg.datasets
        for p in cfg.penalties
        for i in range(cfg.n_trials(p) if cfg.keeps_every(p) else 1)
    ]
    return stage.describe_plan(stage.plan_tasks(pd.DataFrame(rows), settings), settings)


def _search_task(cfg: StudyConfig, dataset: str, penalty: str, data: list, provenance: dict) -> dict:
    """Body of one search's Ray task: ``search.run_one`` in a worker; returns its summary."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    interrupts.SECOND_SIGINT_STOPS = False  # the driver's (possibly repeated) ray.cancel: one graceful stop
    lines: list[str] = []
    search.warm_imports(cfg)  # a fresh process's imports are not the search's length (the ETA's correction)
    t0 = time.perf_counter()
    trials = search.run_one(cfg, dataset, penalty, lambda: data[0], provenance, verbose=0, log=lines.append)
    return {"dataset": dataset, "penalty": penalty, "lines": lines, "n": len(trials),
            "seconds": time.perf_counter() - t0}


class _Progress:
    def __init__(self, log: Callable[[str], None], n_searches: int, predicted: dict | None = None,
                 lanes: int = 1) -> None:
        self.log, self.n = log, n_searches
        self.t0 = time.perf_counter()
        self.durations: list[float] = []
        self.finished: dict[tuple[str, str], float] = {}  # (dataset, penalty) -> seconds it took
        self.predicted, self.lanes = predicted or {}, lanes  # the profile's search lengths (predicted_searches)
        self.last = 0.0
        self.trials: Callable[[], str] = lambda: ""  # the running trials' epochs (study/progress.py)
        self.state: Callable[[], tuple[dict, list]] = lambda: ({}, [])  # running {key: elapsed s}, waiting keys

    def line(self, event: str, running: int, waiting: int, done: int, runner) -> None:
        import ray

        el = time.perf_counter() - self.t0
        total, avail = ray.cluster_resources().get("CPU", 0), ray.available_resources().get("CPU", 0)
        ev = ""
        if runner is not None and runner.stats["total"]:
            st = runner.stats
            ev = (f"; evaluation {st['done']}/{st['submitted']} tasks done, {len(runner.pending)} running, "
                  f"{len(runner.queue)} queued")
        eta = ""
        if running or waiting:
            now, later = self.state()
            left = search_eta(self.predicted, self.finished, now, later, self.lanes)
            if left is not None:  # the profile's lengths, corrected by the searches done so far
                eta = f", search ETA ~{left:.0f} s"
            elif self.durations:  # no profile: the mean search so far
                per = sum(self.durations) / len(self.durations)
                eta = f", search ETA ~{per * math.ceil((running + waiting) / max(1, running)):.0f} s"
        self.log(f"[study] {event} | searches {done} done, {running} running, {waiting} waiting; "
                 f"{total - avail:g}/{total:g} CPUs busy{ev}; {el:.0f} s{eta}{self.trials()}")
        self.last = time.perf_counter()


def run_study(
    cfg: StudyConfig,
    *,
    evaluate: bool = True,
    verbose: int = 1,
    log: Callable[[str], None] = print,
    progress_every: float = 30.0,
    stats: dict | None = None,
) -> pd.DataFrame:
    """Run (or continue) every search and, with ``evaluate``, every evaluation task, concurrently.

    Needs a connected Ray. Returns the ``selected`` table (written, like the models, as the
    sequential schedule writes them); the evaluation tables are complete on return. ``stats``, if
    given, receives the evaluation stage's counts and timings (``task_seconds``, ``wall_seconds`` …).
    """
    import ray

    from evaluation import stage

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    search.check_output(cfg)
    journal.pull_journal(cfg.location)
    journal.repair_journals(cfg.location, log)  # a torn last record (a crash mid-write) would stop Optuna's writes
    provenance = {"git_commit": R.git_commit(), "versions": json.dumps(R.package_versions(), sort_keys=True)}
    refs: dict[str, object] = {}

    def data(dataset: str) -> list:  # in a list: the task gets the reference, not the splits
        if dataset not in refs:
            refs[dataset] = ray.put(search.search_splits(cfg, dataset))
        return [refs[dataset]]

    here = ray.get_runtime_context().get_node_id()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # one Tuner at a time per worker process, the processes reused by later searches (their torch, Tune and
    # Optuna imports paid once, as in the sequential schedule's driver); never rerun blindly
    remote = ray.remote(num_cpus=0, max_calls=0, max_retries=0)(_search_task).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    )
    order = [(d, p) for p in sorted(cfg.penalties, key=lambda p: p != "none") for d in cfg.datasets]  # baselines first
    waiting = list(order)
    running: dict = {}
    done: set[tuple[str, str]] = set()
    limit = search_limit(cfg, ray.cluster_resources().get("CPU", 1))
    done_before = {(d, p) for d, p in order if storage.exists(
        storage.join(cfg.location, "tune", search.experiment_name(d, p), search.DONE_FILE))}
    prog = _Progress(log, len(order), predicted_searches(cfg), limit)
    prog.trials = lambda: progress.describe(progress.running_trials(cfg.location, [v[:2] for v in running.values()]))
    prog.state = lambda: ({v[:2]: time.perf_counter() - v[2] for v in running.values()}, list(waiting))
    runner = (
        stage.Runner(stage.settings_from_config(cfg), cfg.location, log=lambda _m: None, progress_every=float("inf"))
        if evaluate
        else None
    )
    evaluated: set[str] = set()  # model ids whose tasks were queued
    if runner is not None:  # the whole study's evaluation work, printed before anything runs
        log(planned_evaluation(cfg, runner.s))

    def select_ready() -> None:
        """Queue the evaluation of every (dataset, penalty) whose own search and baseline are done."""
        if runner is None:
            return
        trials = None
        for d, p in order:
            if (d, p) not in done or ("none" in cfg.penalties and (d, "none") not in done):
                continue
            if "none" not in cfg.penalties and any((d, q) not in done for q in cfg.penalties):
                continue  # no baseline: the random control's model is only known at the end
            if trials is None:
                trials = R.read_table(cfg.location, "trials")
            # the rule needs only this search and the baseline's: select (and export) over those two
            both = selection.select(
                cfg, trials[(trials["dataset"] == d) & trials["penalty"].isin(["none", p])], export=True
            )
            ids = {stage.model_id(r) for _, r in both[both["penalty"] == p].iterrows()} - evaluated
            if not ids:
                continue
            n = runner.add(both, runner.tasks_for(both, ids))
            evaluated.update(ids)
            prog.line(
                f"{d}/{p}: {len(ids)} model(s) selected, {n} evaluation task(s) queued",
                len(running),
                len(waiting),
                len(done),
                runner,
            )

    t_search0 = time.perf_counter()
    try:
        while waiting or running or (runner is not None and runner.busy):
            while waiting and len(running) < limit:
                d, p = waiting.pop(0)
                running[remote.remote(cfg, d, p, data(d), provenance)] = (d, p, time.perf_counter())
            wait_on = list(running) + (runner.refs() if runner is not None else [])
            ready, _ = ray.wait(wait_on, num_returns=1, timeout=progress_every)
            for ref in ready:
                if ref in running:
                    d, p, t0 = running.pop(ref)
                    info = ray.get(ref)  # a failed search raises here: the study stops, its state is saved
                    done.add((d, p))
                    prog.durations.append(time.perf_counter() - t0)
                    if (d, p) not in done_before:  # a search done by an earlier run says nothing of the profile
                        prog.finished[d, p] = prog.durations[-1]
                    for line in info["lines"]:
                        log(line)
                    prog.line(f"{d}/{p} search done", len(running), len(waiting), len(done), runner)
                    select_ready()
                else:
                    runner.complete(ref)
            if not ready or time.perf_counter() - prog.last >= progress_every:
                prog.line("progress", len(running), len(waiting), len(done), runner)
    except BaseException:
        for ref in list(running) + (list(runner.pending) if runner is not None else []):
            ray.cancel(ref)  # Tune saves its state on the interrupt; a rerun continues
        if running:  # let the searches save their state before Ray goes (a second Ctrl-C stops at once)
            log(f"[study] stopping {len(running)} running search(es); their state is saved for a rerun")
            ray.wait(list(running), num_returns=len(running), timeout=STOP_WAIT_S)
        raise
    log(f"[study] all {len(order)} searches done in {time.perf_counter() - t_search0:.0f} s")
    trials = R.read_table(cfg.location, "trials")
    selected = selection.select(cfg, trials)
    if len(selected):
        R.write_table(selected, cfg.location, "selected", key=cfg.name)
    if runner is not None:
        # anything not planned yet (no baseline in the study): plan it now, then finish the stage
        rest = runner.tasks_for(selected) if len(selected) else []
        # cross-map tasks whose map model belongs to a search paired with another baseline come now too
        if runner.add(selected, [t for t in rest if t.model_id not in evaluated or t.kind == "crossmap"]):
            while runner.busy:
                ready, _ = ray.wait(runner.refs(), num_returns=1)
                for ref in ready:
                    runner.complete(ref)
        runner.log = log
        st = runner.finish(selected)
        search.saved_config.evaluation_done(cfg)  # complete: config.yaml records the evaluation settings
        if stats is not None:
            stats.update(st)
        stats = st
        if stats.get("submitted"):
            eff = stats["task_seconds"] / max(stats["wall_seconds"], 1e-9)
            log(
                f"[evaluate] {stats['submitted']} tasks ({stats['total']} planned) in {stats['wall_seconds']:.0f} s "
                f"of the study (task time {stats['task_seconds']:.0f} s, {eff:.2f} task-seconds per second) on "
                f"{len(stats['nodes'])} node(s)"
            )
        else:
            log(f"[evaluate] all {stats['total']} tasks already done")
    return selected
