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
from trainables.simulated import search_seconds, search_work

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
            work += search_work(cfg, d, p) * per_trial
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
    """Samples (every ``every`` s) the processes below this driver: the Ray worker processes (peak at once and all
    seen) and the CPU seconds of every descendant (raylets, GCS, workers) plus the driver's own, from ``/proc``.

    In a simulated study the trials and tasks sleep, so that CPU time is the study's fixed cost (process starts,
    imports, Tune's and Optuna's bookkeeping, Parquet writes); on a machine of few cores serving many logical
    slots it is what the cores must get through, ``cpu_seconds / os.cpu_count()`` at the least."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.seen, self.peak, self.driver_cpu = every, set(), 0, 0.0
        self.first: dict[int, float] = {}  # pid -> CPU seconds when first seen (processes there before the run)
        self.last: dict[int, float] = {}  # pid -> CPU seconds when last seen
        self.name: dict[int, str] = {}  # pid -> its name when last seen (ray::ImplicitFunc, raylet, ...)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._cpu0 = _own_cpu()
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        self.driver_cpu = _own_cpu() - self._cpu0

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds used while sampled by the driver and every process below it (a process gone between two
        samples loses at most ``every`` seconds of its own)."""
        return self.driver_cpu + sum(c - self.first.get(p, 0.0) for p, c in self.last.items())

    def cpu_by_name(self) -> dict[str, tuple[int, float]]:
        """{process name: (processes, CPU seconds)}, the driver as ``driver``, largest first."""
        out: dict[str, list] = {"driver": [1, self.driver_cpu]}
        for p, c in self.last.items():
            v = out.setdefault(self.name.get(p, "?"), [0, 0.0])
            v[0], v[1] = v[0] + 1, v[1] + c - self.first.get(p, 0.0)
        return {k: (n, c) for k, (n, c) in sorted(out.items(), key=lambda kv: -kv[1][1])}

    def _sample(self, initial: bool = False) -> None:
        workers, cpu, names = descendants(names=True)
        self.seen |= workers
        self.name.update({p: n for p, n in names.items() if n})  # an exited process's cmdline is empty
        self.peak = max(self.peak, len(workers))
        for pid, c in cpu.items():
            if initial:
                self.first[pid] = c
            self.last[pid] = max(c, self.last.get(pid, 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


AGENTS = (b"ray::DashboardAgent", b"ray::RuntimeEnvAgent", b"ray::JobAgent")  # Ray's own, not workers


def descendants(root: int | None = None, names: bool = False):
    """(PIDs of the Ray worker processes, ``default_worker.py``, and CPU seconds of every process) below ``root``
    (this process); with ``names`` also {pid: the process's name}."""
    root = os.getpid() if root is None else root
    tick = os.sysconf("SC_CLK_TCK")
    parent, cmd, cpu = {}, {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd[int(d)] = fh.read()
        except (OSError, IndexError, ValueError):
            continue
        parent[int(d)], cpu[int(d)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    below, workers, called = {}, set(), {}
    for pid, c in cmd.items():
        p, hops = pid, 0
        while p in parent and p != root and p > 1 and hops < 50:
            p, hops = parent[p], hops + 1
        if p != root or pid == root:
            continue
        below[pid] = cpu[pid]
        first = c.split(b"\0")[0].decode(errors="replace")
        called[pid] = first.split(" ")[0] if first.startswith("ray::") else Path(first).name
        if b"default_worker.py" in c and not first.startswith("ray::"):
            called[pid] = "idle worker"
        # a worker renames itself ray::<task or actor> once it runs something
        if b"default_worker.py" in c or (c.startswith(b"ray::") and not c.startswith(AGENTS)):
            workers.add(pid)
    return (workers, below, called) if names else (workers, below)


def worker_pids(root: int | None = None) -> set[int]:
    """PIDs of Ray worker processes (``default_worker.py``) descending from ``root`` (this process)."""
    return descendants(root)[0]


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
            "workers_peak": w.peak, "cpu_seconds": w.cpu_seconds, "cpu_by_name": w.cpu_by_name(),
            "cores": os.cpu_count() or 1,
            "time_scale": cfg.simulate.time_scale}


HEADER = (f"{'schedule':<11} {'slots':>5} {'work s':>8} {'crit s':>7} {'bound s':>8} {'wall s':>7} "
          f"{'overhead':>8} {'occup.':>7} {'trials':>6} {'tasks':>5} {'drv RSS':>8} {'workers':>9} {'CPU s':>7} "
          f"{'CPU/cores':>9}")


def format_row(r: dict) -> str:
    return (f"{r['schedule']:<11} {r['slots']:>5g} {r['work']:>8.1f} {r['critical_path']:>7.1f} {r['bound']:>8.1f} "
            f"{r['wall']:>7.1f} {100 * r['overhead']:>7.0f}% {100 * r['occupancy']:>6.1f}% {r['trials']:>6d} "
            f"{r['tasks']:>5d} {r['rss_mib']:>5.0f} MiB {r['workers']:>4d}/{r['workers_peak']:<4d} "
            f"{r['cpu_seconds']:>7.0f} {r['cpu_seconds'] / r['cores']:>8.0f}s")


def format_table(rows: list[dict], shape: str) -> str:
    scale = rows[0]["time_scale"] if rows else 1.0
    lines = [f"[simulate] {shape}; every duration x {scale:g} (fixed costs do not shrink: overhead at this scale "
             f"overstates the real one); workers = Ray worker processes started/at once; CPU s = CPU time of the "
             f"driver and every process below it (the sleeping study's fixed costs), CPU/cores = that over this "
             f"machine's {rows[0]['cores'] if rows else os.cpu_count()} cores (a floor on the wall here)", HEADER]
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
