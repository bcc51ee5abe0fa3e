"""Simulated studies: ``python -m study.launch --simulate [PROFILE] --cpus N [--gpus N] [--nodes K] [--time-scale F]``.

The study runs through the real code path (schedule, Tune, Optuna samplers and journals, selection,
evaluation task graph, Parquet writers, resume) on a cluster made of Ray logical resources: one node of
``--cpus`` CPUs, or ``--nodes K`` nodes of ``--cpus`` CPUs each (``ray.cluster_utils.Cluster`` on this
machine). Only a training epoch's body (``trainables/simulated.py``) and an evaluation task's body
(``evaluation/simulated.py``) are replaced by a sleep of the profile's predicted seconds (x ``--time-scale``).

Beside the run it prints the **lower bound** (:func:`lower_bound`): total work in slot-seconds, the critical
path (a penalty's search at its concurrency limit, after its dataset's baseline search, then its longest
evaluation chain), ``bound = max(critical path, work / slots)``, and the measured wall, overhead
(``wall / bound - 1``), occupancy, the driver's peak RSS and the Ray worker processes it started.
"""

from __future__ import annotations

import math
import os
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from foundations import profile
from study.config import ConfigError, StudyConfig
from trainables.simulated import search_seconds, trial_seconds

OBJECT_STORE_BYTES = 512 * 2**20  # per simulated node: the data splits only (no model, no tensors in tasks)


# --------------------------------------------------------------------------- command line
def add_arguments(p) -> None:
    """The launcher's simulation options."""
    g = p.add_argument_group("simulation (a study of sleeping trials and tasks on a cluster of logical resources)")
    g.add_argument("--simulate", nargs="?", const=str(profile.DEFAULT_PROFILE), default=None, metavar="PROFILE",
                   help=f"simulate the study with a timing profile (default: {profile.DEFAULT_PROFILE.name}); "
                        "no training, the real schedule")
    g.add_argument("--cpus", type=int, default=None, help="with --simulate: logical CPUs per node")
    g.add_argument("--gpus", type=int, default=None, help="with --simulate: logical GPUs per node (default 0)")
    g.add_argument("--nodes", type=int, default=None, help="with --simulate: nodes (ray.cluster_utils; default 1)")
    g.add_argument("--time-scale", type=float, default=None, metavar="F",
                   help="with --simulate: multiply every simulated duration by F (0.05: 20x faster)")
    g.add_argument("--compare", action="store_true",
                   help="with --simulate: run both schedules (sequential, concurrent) in <output>/<schedule>, "
                        "side by side")


def configure(args, cfg: StudyConfig) -> StudyConfig:
    """``cfg`` with its ``simulate`` section from the options; ConfigError (one line) on bad input."""
    opts = {"--cpus": args.cpus, "--gpus": args.gpus, "--nodes": args.nodes, "--time-scale": args.time_scale}
    if args.simulate is None:
        given = [k for k, v in opts.items() if v is not None] + (["--compare"] if args.compare else [])
        if given:
            raise ConfigError(f"{given[0]}: only with --simulate; valid choices: --simulate [PROFILE] {given[0]} ...")
        return cfg
    if args.nodes is not None and args.cpus is None:
        raise ConfigError("--nodes: needs --cpus (logical CPUs per node); valid choices: --nodes K --cpus N, N >= 1")
    for key, v, low in (("--cpus", args.cpus, 1), ("--nodes", args.nodes, 1), ("--gpus", args.gpus, 0)):
        if v is not None and v < low:
            raise ConfigError(f"{key}: must be an integer >= {low}, got {v}; valid choices: {low}, {low + 1}, ...")
    if args.time_scale is not None and not (args.time_scale > 0 and math.isfinite(args.time_scale)):
        raise ConfigError(f"--time-scale: must be a number > 0, got {args.time_scale}; "
                          f"valid choices: e.g. 1, 0.1, 0.01")
    for key, have, need in (("--cpus", args.cpus, cfg.resources.cpu), ("--gpus", args.gpus or 0, cfg.resources.gpu)):
        if have is not None and need > have:
            raise ConfigError(f"{key}: {have:g} per node cannot hold a trial's resources ({need:g}); "
                              f"valid choices: {key} >= {math.ceil(need)} or a smaller resources.{key[2:-1]}")
    path = str(Path(args.simulate).absolute())
    try:
        profile.load(path)
    except profile.ProfileError as exc:
        raise ConfigError(str(exc)) from None
    scale = args.time_scale if args.time_scale is not None else cfg.simulate.time_scale
    return replace(cfg, simulate=profile.Simulation(profile=path, time_scale=float(scale)))


# --------------------------------------------------------------------------- durations
def lower_bound(cfg: StudyConfig, slots: float) -> dict:
    """Total work, critical path and ``bound = max(critical path, work / slots)`` in (scaled) seconds.

    A search of n trials, c at a time, takes at least ceil(n / c) trial lengths; a penalty's evaluation
    starts after its own search and its dataset's baseline search (selection needs both); its longest
    evaluation chain is its longest metric chunk or a ROAR ranking followed by one retrain."""
    from evaluation import simulated, stage

    f, per_trial = cfg.simulate.time_scale, cfg.resources.cpu
    search_s, work = {}, 0.0
    for d in cfg.datasets:
        for p in cfg.penalties:
            search_s[d, p] = search_seconds(cfg, d, p)
            work += cfg.n_trials(p) * trial_seconds(cfg, d, p) * per_trial
    s = stage.settings_from_config(cfg)
    rows = planned_rows(cfg)
    chain: dict[tuple[str, str], float] = {}
    ranks_seen = set()
    for task in stage.plan_tasks(rows, s):
        sp = simulated.spec(task, s, 10_000)
        rk = (task.model_id if task.method not in ("random", "") else task.dataset, task.method or "random")
        ranks = sp.get("ranks_seconds", 0.0)
        if task.kind == "roar" and rk not in ranks_seen:
            ranks_seen.add(rk)
            work += ranks * s.cpu
        work += sp["seconds"] * s.cpu
        key = (task.dataset, task.penalty)
        chain[key] = max(chain.get(key, 0.0), sp["seconds"] + (ranks if task.kind == "roar" else 0.0))
    crit = 0.0
    for (d, p), t in search_s.items():
        base = search_s.get((d, "none"), 0.0) if "none" in cfg.penalties else max(
            search_s[d, q] for q in cfg.penalties)
        crit = max(crit, max(t, base) + chain.get((d, p), 0.0))
    work, crit = work * f, crit * f
    return {"work": work, "critical_path": crit, "slots": slots, "bound": max(crit, work / max(slots, 1e-9))}


def planned_rows(cfg: StudyConfig):
    """The models the selection will pick, before any exists (as ``schedule.planned_evaluation`` plans them)."""
    import pandas as pd

    return pd.DataFrame([
        {"dataset": d, "penalty": p, "trial_id": f"{d}-{i}"}
        for d in cfg.datasets
        for p in cfg.penalties
        for i in range(cfg.n_trials(p) if cfg.keeps_every(p) else 1)
    ])


# --------------------------------------------------------------------------- the simulated cluster
@contextmanager
def session(cpus: int | None, gpus: int | None, nodes: int | None):
    """A local Ray of logical resources: one node, or ``nodes`` nodes with ``ray.cluster_utils.Cluster``."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster, no token needed
    import logging

    import ray

    kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    cluster = None
    if (nodes or 1) == 1:
        ray.init(address="local", num_cpus=cpus, num_gpus=gpus or 0, object_store_memory=OBJECT_STORE_BYTES, **kw)
    else:
        from ray.cluster_utils import Cluster

        node = {"num_cpus": cpus, "num_gpus": gpus or 0, "object_store_memory": OBJECT_STORE_BYTES}
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        for _ in range(nodes - 1):
            cluster.add_node(**node)
        ray.init(address=cluster.address, **kw)
        cluster.wait_for_nodes()
    try:
        yield ray
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


class Workers:
    """Samples (every ``every`` s) the Ray worker processes below this driver: peak at once and all seen."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.seen, self.peak = every, set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = worker_pids()
            self.seen |= now
            self.peak = max(self.peak, len(now))
            self._stop.wait(self.every)


AGENTS = (b"ray::DashboardAgent", b"ray::RuntimeEnvAgent", b"ray::JobAgent")  # Ray's own, not workers


def worker_pids(root: int | None = None) -> set[int]:
    """PIDs of Ray worker processes (``default_worker.py``) descending from ``root`` (this process)."""
    root = os.getpid() if root is None else root
    parent, cmd = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd[int(d)] = fh.read()
        except (OSError, IndexError, ValueError):
            continue
    out = set()
    for pid, c in cmd.items():  # a worker renames itself ray::<task or actor> once it runs something
        if b"default_worker.py" not in c and not (c.startswith(b"ray::") and not c.startswith(AGENTS)):
            continue
        p, hops = pid, 0
        while p in parent and p != root and p > 1 and hops < 50:
            p, hops = parent[p], hops + 1
        if p == root:
            out.add(pid)
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- one measured run
def run_schedule(cfg: StudyConfig, log=print, verbose: int = 0) -> dict:
    """Run ``cfg`` (its ``schedule``) on the connected Ray and measure it against :func:`lower_bound`."""
    import ray

    from evaluation import stage
    from foundations import schemas as R
    from study import schedule, search

    slots = ray.cluster_resources().get("CPU", 1) / max(cfg.resources.cpu, 1e-9)
    bound = lower_bound(cfg, slots)
    t0 = time.perf_counter()
    which = schedule.chosen(cfg, ray.cluster_resources().get("CPU", 1))[0]
    with Workers() as w:
        if which == "sequential":
            sel = search.run_search(cfg, verbose=verbose, log=log)
            stats = stage.run_for_study(cfg, sel, log=log)
        else:
            stats = {}
            schedule.run_study(cfg, verbose=verbose, log=log, stats=stats)
    wall = time.perf_counter() - t0
    t = R.read_table(cfg.location, "trials")
    busy = float((t["end_time"] - t["start_time"]).dt.total_seconds().sum()) * cfg.resources.cpu
    busy += float(stats.get("task_seconds", 0.0)) * cfg.resources.cpu
    return {**bound, "schedule": which, "wall": wall, "overhead": wall / max(bound["bound"], 1e-9) - 1,
            "occupancy": busy / max(slots * wall, 1e-9), "busy": busy, "trials": len(t),
            "tasks": int(stats.get("submitted", 0)), "rss_mib": peak_rss_mib(), "workers": len(w.seen),
            "workers_peak": w.peak, "time_scale": cfg.simulate.time_scale}


HEADER = (f"{'schedule':<11} {'slots':>5} {'work s':>8} {'crit s':>7} {'bound s':>8} {'wall s':>7} "
          f"{'overhead':>8} {'occup.':>7} {'trials':>6} {'tasks':>5} {'drv RSS':>8} {'workers':>9}")


def format_row(r: dict) -> str:
    return (f"{r['schedule']:<11} {r['slots']:>5g} {r['work']:>8.1f} {r['critical_path']:>7.1f} {r['bound']:>8.1f} "
            f"{r['wall']:>7.1f} {100 * r['overhead']:>7.0f}% {100 * r['occupancy']:>6.1f}% {r['trials']:>6d} "
            f"{r['tasks']:>5d} {r['rss_mib']:>5.0f} MiB {r['workers']:>4d}/{r['workers_peak']:<4d}")


def format_table(rows: list[dict], shape: str) -> str:
    scale = rows[0]["time_scale"] if rows else 1.0
    lines = [f"[simulate] {shape}; every duration x {scale:g} (fixed costs do not shrink: overhead at this scale "
             f"overstates the real one); workers = Ray worker processes started/at once", HEADER]
    return "\n".join(lines + [format_row(r) for r in rows])


def shape(args) -> str:
    n, c, g = args.nodes or 1, args.cpus, args.gpus or 0
    cpus = f"{c} CPUs" if c else "all CPUs"
    return f"{n} node(s) x {cpus}" + (f" + {g} GPU(s)" if g else "")


def main(args, cfg: StudyConfig) -> int:
    """``study.launch --simulate``: run the study (or both schedules with ``--compare``) and print the bound."""
    from study import search

    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    runs = [cfg] if not args.compare else [
        replace(cfg, search=replace(cfg.search, schedule=s), output=str(Path(cfg.location) / s))
        for s in ("sequential", "concurrent")]
    rows = []
    t0 = time.perf_counter()
    with session(args.cpus, args.gpus, args.nodes):
        print(f"[simulate] Ray up in {time.perf_counter() - t0:.1f} s: {shape(args)}", flush=True)
        for c in runs:
            search.check_output(c)
            r = run_schedule(c, log=log)
            rows.append(r)
            print(format_row(r), flush=True)
    print(format_table(rows, shape(args)), flush=True)
    return 0
