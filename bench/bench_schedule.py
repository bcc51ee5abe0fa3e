"""Slot occupancy of the study's schedules: one search after the other versus everything at once.

    python bench/bench_schedule.py [--cpus 16] [--trials 4] [--data-fraction 0.003]

Starts a private local Ray with ``--cpus`` logical CPUs (more than this machine has: the slots of
a cluster), then runs the same study of tiny trials (the real trainable on a very small data
fraction; both datasets × all seven penalties = 14 searches × ``--trials`` trials, 4 at once per
search, plus a small evaluation stage) twice, in fresh folders:

- ``sequential``: ``search.run_search`` (one Tuner after the other) then ``evaluation.stage.run``;
- ``concurrent``: ``schedule.run_study`` (every search and evaluation task at once).

and prints, side by side, the wall time of the whole study and the **slot occupancy**: the sum of
the trial durations (start to end, from the trials table) and evaluation task durations (from the
stage) divided by (slots × wall time). With more logical slots than cores the trials run slower
when many run at once; the occupancy measures how busy the slots are kept, not the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundations import schemas as R  # noqa: E402
from study.config import load_config  # noqa: E402


def study_config(out: Path, args, schedule: str):
    return load_config("quick", [
        f"output={out}", f"schedule={schedule}", "name=bench", f"trials={args.trials}", "epochs=1",
        "max_concurrent_trials=4", "sampler=random", f"data_fraction={args.data_fraction}", "val_limit=200",
        "explain_n=10", "per_dataset={fashion-mnist: {model: cnn3b}}",
        "evaluation.methods=[saliency]", "evaluation.metrics=[morf, complexity, roar]", "evaluation.n_samples=20",
        "evaluation.chunk_size=20", "evaluation.roar.fractions=[0.5]", "evaluation.roar.repeats=1",
        "evaluation.roar.epochs=1", f"evaluation.roar.data_fraction={args.data_fraction}", "evaluation.roar.n_test=100",
    ])


def occupancy(out: Path, eval_seconds: float, slots: int, wall: float) -> tuple[float, float, int]:
    t = R.read_table(out, "trials")
    trial_seconds = float((t["end_time"] - t["start_time"]).dt.total_seconds().sum())
    return (trial_seconds + eval_seconds) / (slots * wall), trial_seconds, len(t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpus", type=int, default=16, help="logical CPUs (slots) of the local Ray (default 16)")
    p.add_argument("--trials", type=int, default=4, help="trials per search (default 4)")
    p.add_argument("--data-fraction", type=float, default=0.003, help="training fraction per trial (default 0.003)")
    p.add_argument("--keep", action="store_true", help="keep the study folders")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from evaluation import stage
    from study import schedule, search

    root = Path(tempfile.mkdtemp(prefix="bench_schedule_"))
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    rows = []
    try:
        for name in ("sequential", "concurrent"):
            out = root / name
            cfg = study_config(out, args, name)
            print(f"[bench] {name}: 14 searches x {args.trials} trials on {args.cpus} slots ...", flush=True)
            t0 = time.perf_counter()
            if name == "sequential":
                sel = search.run_search(cfg, verbose=0, log=lambda _m: None)
                stats = stage.run(cfg, sel, log=lambda _m: None)
            else:
                stats = {}
                schedule.run_study(cfg, log=lambda _m: None, stats=stats)
            wall = time.perf_counter() - t0
            occ, trial_s, n = occupancy(out, stats.get("task_seconds", 0.0), args.cpus, wall)
            rows.append((name, wall, occ, n, trial_s, stats.get("task_seconds", 0.0)))
            print(f"[bench] {name}: {wall:.1f} s wall, occupancy {100 * occ:.1f} %", flush=True)
    finally:
        ray.shutdown()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'schedule':<12} {'wall (s)':>9} {'occupancy':>10} {'trials':>7} {'trial s':>9} {'eval task s':>12}")
    for name, wall, occ, n, ts, es in rows:
        print(f"{name:<12} {wall:>9.1f} {100 * occ:>9.1f}% {n:>7d} {ts:>9.1f} {es:>12.1f}")
    (seq, w1, o1, *_), (con, w2, o2, *_) = rows
    print(f"\nconcurrent / sequential: wall {w2 / w1:.2f}x, occupancy {o2 / max(o1, 1e-9):.2f}x "
          f"({os.cpu_count()} physical CPUs here, {args.cpus} logical slots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
