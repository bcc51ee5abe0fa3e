"""The study's schedules against their lower bound, on simulated cluster shapes; and the laptop, for real.

    python bench/bench_schedule.py [--shapes 16,64,4x16] [--target-bound 60,240] [--sequential-bound 60]
                                   [--profile P] [--schedules both] [--keep DIR]
    python bench/bench_schedule.py --real quick [--cpus 2] [--repeats 2] [--profile P]

Simulated (``study.launch --simulate``'s code path, study/simulate.py): per shape a private Ray of logical
resources (``N``: one node of N CPUs; ``KxN``: K nodes of N CPUs, ``ray.cluster_utils``), and on it the
shape's study with each schedule in a fresh folder, the trial epochs and evaluation tasks sleeping the
profile's seconds times a time scale chosen so that the study's lower bound is ``--target-bound`` seconds
(the concurrent schedule at each of a list of bounds, the sequential one at ``--sequential-bound``).
Shapes and studies (the goals of docs/search.md):

- ``16``: 14 searches x 4 trials (4 at once) of the ``paper`` preset's training (8 epochs; cnn4b on
  Fashion-MNIST), a small evaluation; goal occupancy >= 85 %;
- ``64``: the ``paper`` preset (14 searches x 20 trials, 4 at once, 8 epochs, its evaluation); goal overhead <= 10 %;
- ``4x16``: ``paper`` on 4 nodes of 16 CPUs; goal overhead <= 15 %.

Printed per run: work (slot-seconds), critical path, bound = max(critical path, work / slots), wall,
overhead = wall / bound - 1, occupancy, the driver's peak RSS, the Ray worker processes started / at once and
the CPU seconds of the driver and every process below it (the sleeping study's fixed costs), by process.
Fixed costs (process starts, imports, Tune's bookkeeping, Parquet writes) do not shrink with the time scale,
so the overhead at a scale overstates the real one. With the concurrent schedule at two or more bounds the
bench fits ``wall = a x bound + F`` (least squares): ``a - 1`` is the overhead that grows with the study,
``F`` the fixed part, and ``a - 1 + F / B`` the overhead at the study's unscaled bound B (time scale 1).

``--real quick``: the quick preset for real on this machine (``--cpus`` CPUs), one run per schedule one after
the other (``--real-schedules``: sequential, the default ``auto`` and concurrent), each one's ratio to the
sequential run (``--repeats N``: N runs each in alternating order, the fastest compared), and the simulated
prediction of the default schedule (time scale 1) beside
it, from a profile of the sequential run just measured (and from ``--profile`` if given). The simulation does not
run the report stage, and its trials sleep instead of competing for the cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundations import profile  # noqa: E402
from study.config import load_config  # noqa: E402

SMALL_EVAL = ["evaluation.methods=[saliency]", "evaluation.metrics=[morf, complexity, roar]",
              "evaluation.n_samples=20", "evaluation.chunk_size=20", "evaluation.roar.fractions=[0.5]",
              "evaluation.roar.repeats=1", "evaluation.roar.epochs=1", "evaluation.roar.data_fraction=0.05",
              "evaluation.roar.n_test=100"]
GOALS = {"16": ("occupancy", 0.85), "64": ("overhead", 0.10), "4x16": ("overhead", 0.15)}


def shape_study(shape: str, out: Path, prof: str, schedule: str):
    """The study a shape is measured with (time scale 1; the caller rescales)."""
    sim = f"simulate={{profile: {prof}, time_scale: 1.0}}"
    if shape == "16":
        return load_config("paper", [f"output={out}", f"schedule={schedule}", "name=bench", "trials=4",
                                     "max_concurrent_trials=4", "sampler=random", sim, *SMALL_EVAL])
    return load_config("paper", [f"output={out}", f"schedule={schedule}", "name=bench", sim])


def parse_shape(shape: str) -> tuple[int, int]:
    nodes, _, cpus = shape.rpartition("x")
    return int(nodes or 1), int(cpus)


def simulated(args) -> list[dict]:
    from study import search, simulate

    rows = []
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_schedule_"))
    root.mkdir(parents=True, exist_ok=True)
    bounds = [float(b) for b in str(args.target_bound).split(",")]
    seq_bound = float(args.sequential_bound) if args.sequential_bound else bounds[0]
    runs = [(s, b) for s in (("sequential", "concurrent") if args.schedules == "both" else (args.schedules,))
            for b in ((seq_bound,) if s == "sequential" else bounds)]
    try:
        for shape in args.shapes.split(","):
            nodes, cpus = parse_shape(shape)
            with simulate.session(cpus, 0, nodes):
                for schedule, target in runs:
                    cfg = shape_study(shape, root / f"{shape}-{schedule}-{target:g}", args.profile, schedule)
                    unscaled = simulate.lower_bound(cfg, nodes * cpus / cfg.resources.cpu)["bound"]
                    scale = args.time_scale or target / unscaled
                    cfg = replace(cfg, simulate=profile.Simulation(profile=args.profile, time_scale=scale))
                    search.check_output(cfg)
                    print(f"[bench] {shape}: {cfg.name} {schedule}, x {scale:.3g} "
                          f"(unscaled bound {unscaled:.0f} s) ...", flush=True)
                    r = simulate.run_schedule(cfg, log=lambda _m: None)
                    r.update(shape=shape, unscaled_bound=unscaled)
                    rows.append(r)
                    print(simulate.format_row(r), flush=True)
                    print("  CPU s by process (processes): " + ", ".join(
                        f"{k} {c:.0f} ({n})" for k, (n, c) in list(r["cpu_by_name"].items())[:8]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def rows_from_log(path: str) -> list[dict]:
    """The runs a bench log printed (its ``[bench] SHAPE: ...`` and row lines), for ``--table-from``: the table of
    a bench stopped before its end."""
    rows, head = [], None
    for line in Path(path).read_text().splitlines():
        m = re.match(r"\[bench\] (\S+): \S+ (\w+), x (\S+) \(unscaled bound (\d+) s\)", line)
        if m:
            head = (m[1], float(m[3]), float(m[4]))
            continue
        f = line.split()
        if head and f and f[0] in ("sequential", "concurrent") and len(f) == 15:
            workers, peak = f[12].split("/")
            rows.append({"shape": head[0], "schedule": f[0], "slots": float(f[1]), "work": float(f[2]),
                         "critical_path": float(f[3]), "bound": float(f[4]), "wall": float(f[5]),
                         "overhead": float(f[6].rstrip("%")) / 100, "occupancy": float(f[7].rstrip("%")) / 100,
                         "trials": int(f[8]), "tasks": int(f[9]), "rss_mib": float(f[10]), "workers": int(workers),
                         "workers_peak": int(peak), "cpu_seconds": float(f[13]),
                         "cores": round(float(f[13]) / float(f[14].rstrip("s"))), "time_scale": head[1],
                         "unscaled_bound": head[2]})
            head = None
    return rows


def fit(rows: list[dict]) -> tuple[float, float] | None:
    """Least squares ``wall = a x bound + F`` over runs of one shape and schedule at different bounds."""
    if len({round(r["bound"], 6) for r in rows}) < 2:
        return None
    n = len(rows)
    mx, my = sum(r["bound"] for r in rows) / n, sum(r["wall"] for r in rows) / n
    a = sum((r["bound"] - mx) * (r["wall"] - my) for r in rows) / sum((r["bound"] - mx) ** 2 for r in rows)
    return a, my - a * mx


def print_table(rows: list[dict]) -> None:
    from study import simulate

    print(f"\n{'shape':<6} {simulate.HEADER}  {'x scale':>8} {'unscaled bound':>14}  goal")
    for r in rows:
        kind, goal = GOALS.get(r["shape"], ("", 0))
        v = r.get(kind)
        met = "" if v is None else (f"{kind} {'>=' if kind == 'occupancy' else '<='} {goal:.0%}: "
                                    f"{'met' if (v >= goal if kind == 'occupancy' else v <= goal) else 'NOT met'}")
        floor = r["cpu_seconds"] / r["cores"]
        why = f"; CPU-bound here ({floor:.0f} s of fixed costs per core > bound)" if floor >= r["bound"] else ""
        print(f"{r['shape']:<6} {simulate.format_row(r)}  {r['time_scale']:>8.3g} {r['unscaled_bound']:>12.0f} s  "
              f"{met}{why}")
    print("\n| shape | schedule | x scale | work (slot-s) | critical path | bound | wall | overhead | occupancy | "
          "driver RSS | Ray workers started / at once | CPU s (/ cores) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['schedule']} | {r['time_scale']:.3g} | {r['work']:.0f} "
              f"| {r['critical_path']:.0f} s | {r['bound']:.0f} s | {r['wall']:.0f} s | {100 * r['overhead']:.0f} % "
              f"| {100 * r['occupancy']:.1f} % "
              f"| {r['rss_mib']:.0f} MiB | {r['workers']} / {r['workers_peak']} | {r['cpu_seconds']:.0f} "
              f"({r['cpu_seconds'] / r['cores']:.0f}) |")
    print()
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for schedule in ("sequential", "concurrent"):
            sel = [r for r in rows if r["shape"] == shape and r["schedule"] == schedule]
            f = fit(sel)
            if f is None:
                continue
            a, fixed = f
            big = sel[0]["unscaled_bound"]
            floored = [r for r in sel if r["cpu_seconds"] / r["cores"] >= r["bound"]]
            if floored:  # the wall measured this machine's cores, not the schedule: a line through it says nothing
                print(f"{shape} {schedule}: no fit: in {len(floored)} of {len(sel)} runs the fixed costs' CPU "
                      f"seconds over this machine's {floored[0]['cores']} cores exceed the bound ("
                      + ", ".join(f"{r['cpu_seconds'] / r['cores']:.0f} s > {r['bound']:.0f} s" for r in floored)
                      + "): the wall measures the cores, not the schedule")
                continue
            print(f"{shape} {schedule}: wall = {a:.3f} x bound + {fixed:.0f} s over {len(sel)} bounds "
                  f"({', '.join(str(round(r['bound'])) for r in sel)} s): "
                  f"overhead growing with the study {100 * (a - 1):+.1f} %, fixed {fixed:.0f} s; at the unscaled "
                  f"bound ({big:.0f} s, x 1) overhead {100 * (a - 1 + fixed / big):+.1f} %")


def real(args) -> None:
    """The quick preset for real, both schedules, then the simulated prediction of the default schedule."""
    import subprocess

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_real_"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    walls, reports, etas = {}, {}, {}
    kinds = args.real_schedules.split(",")
    runs_of: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}  # (wall, report) per repeat
    try:
        for r in range(args.repeats):  # alternating order: neither schedule always runs first (a warm cache)
            for schedule in kinds if r % 2 == 0 else kinds[::-1]:  # default: the preset's own (`auto` unless pinned)
                how = [] if schedule == "default" else ["--set", f"schedule={schedule}"]
                folder = root / (schedule if r == 0 else f"{schedule}-{r}")
                cmd = [sys.executable, "-m", "study.launch", "--config", args.real, "--output", str(folder),
                       "-q", "--num-cpus", str(args.cpus), *how]
                t0 = time.perf_counter()
                out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
                wall = time.perf_counter() - t0
                m = re.search(r"^\[report\] done in ([0-9.]+) s", out, re.M)  # the launcher's timing of its report
                runs_of[schedule].append((wall, float(m.group(1)) if m else 0.0))
                etas.setdefault(schedule, eta_errors(out))
                print(f"[bench] real {args.real} {schedule} #{r + 1}: {wall:.1f} s, of which report "
                      f"{runs_of[schedule][-1][1]:.1f} s", flush=True)
        for k, rs in runs_of.items():  # the fastest repeat of each: the least disturbed by anything else
            walls[k], reports[k] = min(rs)
        if args.skip_prediction:
            _print_real(args, walls, reports, runs_of, etas)
            return
        # the prediction: the simulated default schedule, from the given profile and from a profile of the
        # sequential run just measured (same machine, same load: what the schedule adds is what is predicted)
        subprocess.run([sys.executable, "-m", "study.profile", str(root / "sequential"), "--out",
                        str(root / "measured.yaml")], check=True, env=env, stdout=subprocess.DEVNULL)
        runs = [("measured", str(root / "measured.yaml"))] + ([("given", args.profile)] if args.profile else [])
        for name, prof in runs:
            cmd = [sys.executable, "-m", "study.launch", "--config", args.real, "--output", str(root / f"sim-{name}"),
                   "-q", "--simulate", prof, "--cpus", str(args.cpus)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            walls[name] = time.perf_counter() - t0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    _print_real(args, walls, reports, runs_of, etas)


def eta_errors(out: str) -> list[tuple[int, int, float, float]]:
    """From a launcher's output: per ``search done`` line with an ETA, (searches done, of all, the ETA, the seconds
    the remaining searches then took), the latter from the elapsed seconds of the last such line."""
    pat = re.compile(r"^\[study\] \S+ search done \| searches (\d+)(?:/(\d+))? done.*?; (\d+) s"
                     r"(?:, search ETA ~(\d+) s)?", re.M)
    lines = [(int(m[1]), int(m[2] or 0), float(m[3]), m[4]) for m in pat.finditer(out)]
    if not lines:
        return []
    end = lines[-1][2]
    return [(k, n, float(eta), end - el) for k, n, el, eta in lines if eta is not None]


def replay_eta(folder: str, prof: str) -> None:
    """The sequential schedule's search ETA replayed on a finished study: after each search (its
    ``search_done.json`` time), the ETA the progress line prints with profile ``prof`` (``progress.search_eta``
    fed the finished searches' lengths as the launcher times them: from the previous search's end, the first
    from Tune's storage marker, which leaves out the driver's one-off start), against what the remaining
    searches then took."""
    import json

    from study import search
    from study.config import load_config as load
    from study.progress import predicted_searches, search_eta

    cfg = load(str(Path(folder) / "config.yaml"))
    cfg = replace(cfg, simulate=profile.Simulation(profile=str(Path(prof).absolute()), time_scale=1.0))
    predicted = predicted_searches(cfg)
    order = [(d, p) for d in cfg.datasets for p in sorted(cfg.penalties, key=lambda p: p != "none")]
    done, length = {}, {}
    for i, (d, p) in enumerate(order):
        tune = Path(folder) / "tune" / search.experiment_name(d, p)
        done[d, p] = json.loads((tune / search.DONE_FILE).read_text())["time"]
        begun = done[order[i - 1]] if i else (tune / ".validate_storage_marker").stat().st_mtime
        length[d, p] = done[d, p] - begun
    end = done[order[-1]]
    print(f"search ETA replayed on {folder} with {prof} (the profile predicts {sum(predicted.values()):.0f} s of "
          f"searches; they took {sum(length.values()):.0f} s):")
    for k in range(1, len(order)):
        eta = search_eta(predicted, {key: length[key] for key in order[:k]}, {}, order[k:], lanes=1)
        took = end - done[order[k - 1]]
        print(f"  after {k:>2} searches: ETA ~{eta:.0f} s, took {took:.0f} s ({100 * (eta / took - 1):+.0f} %)")


def _print_real(args, walls: dict, reports: dict, runs_of: dict, etas: dict | None = None) -> None:
    kinds = args.real_schedules.split(",")
    print(f"\nreal `{args.real}` on {args.cpus} CPUs, the fastest of {args.repeats} run(s) each (launcher wall, Ray "
          "start included, no install; in brackets without the report):")
    print("  " + ", ".join(f"{k} {walls[k]:.1f} s ({walls[k] - reports[k]:.1f} s)" for k in kinds))
    if args.repeats > 1:
        print("  every run: " + "; ".join(f"{k} " + ", ".join(f"{w:.1f}" for w, _ in runs_of[k]) for k in kinds))
    for k in kinds:
        if k != "sequential":
            print(f"  ratio {k} / sequential {walls[k] / walls['sequential']:.2f}")
    for k, rows in (etas or {}).items():  # the first run of each: the progress line's ETA against what followed
        if rows:
            picks = sorted({rows[0], rows[len(rows) // 2], rows[-1]})
            print(f"  search ETA of {k} #1 (from the committed profile): " + "; ".join(
                f"after {d} searches ~{e:.0f} s, took {t:.0f} s ({100 * (e / t - 1) if t else 0:+.0f} %)"
                for d, _, e, t in picks))
    for name, what in (("measured", "a profile of the sequential run above"), ("given", f"profile {args.profile}")):
        if name not in walls:
            continue
        real_core = walls["default"] - reports["default"]  # searches and evaluation: what the simulation runs
        print(f"  simulated prediction of the default schedule from {what}: {walls[name]:.1f} s "
              f"({100 * (walls[name] / real_core - 1):+.0f} % against the measured default without its report, "
              f"{real_core:.1f} s)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="16,64,4x16", help="N (one node of N CPUs) or KxN, comma-separated")
    p.add_argument("--schedules", default="both", choices=("both", "sequential", "concurrent"))
    p.add_argument("--target-bound", default="60,240", help="scale each study to these lower bounds (s, comma-"
                   "separated): the concurrent schedule runs at each")
    p.add_argument("--sequential-bound", default=None, help="the sequential schedule's bound (default: the first)")
    p.add_argument("--time-scale", type=float, default=None, help="a fixed time scale instead of --target-bound")
    p.add_argument("--profile", default=None, help="the timing profile (default: profiles/default.yaml; with --real: "
                   "a second prediction from it, beside the one from the measured sequential run)")
    p.add_argument("--real", default=None, metavar="PRESET", help="measure PRESET for real (both schedules)")
    p.add_argument("--cpus", type=int, default=2, help="with --real: CPUs of the local Ray (default 2)")
    p.add_argument("--real-schedules", default="sequential,default,concurrent",
                   help="with --real: the runs, in order (sequential first: the ratios are against it)")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the study folders under DIR")
    p.add_argument("--repeats", type=int, default=1, help="with --real: runs of each schedule, in alternating order "
                   "(the fastest of each is compared)")
    p.add_argument("--skip-prediction", action="store_true", help="with --real: no simulated prediction")
    p.add_argument("--table-from", default=None, metavar="LOG[,LOG]", help="print the table of the runs these "
                   "bench logs hold (a bench stopped before its end) and exit")
    p.add_argument("--replay-eta", default=None, metavar="FOLDER", help="the search ETA the sequential schedule's "
                   "progress line gives with --profile, replayed on a finished study's measured search lengths")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.table_from:
        print_table([r for log in args.table_from.split(",") for r in rows_from_log(log)])
        return 0
    if args.replay_eta:
        replay_eta(args.replay_eta, args.profile or str(profile.DEFAULT_PROFILE))
        return 0
    if args.real:
        real(args)
        return 0
    args.profile = args.profile or str(profile.DEFAULT_PROFILE)
    print_table(simulated(args))
    print(f"\n({os.cpu_count()} CPUs on this machine; slots are Ray logical CPUs, the trials sleep)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
