"""Search-stage performance: parallel efficiency on local Ray, start-up and per-trial overhead.

    SALIENCY_DATA_ROOT=data python bench/bench_search.py [--trials 8] [--penalty gradient]
        [--data-fraction 0.2] [--cpus 2] [--quick]

1. Ray start-up: ``ray.init`` of a private single-node Ray (``--cpus`` CPUs, no dashboard).
2. Search: one (mnist, penalty) search of ``--trials`` trials, 1 epoch, 1 CPU per trial,
   ``--cpus`` at once, timed from building the Tuner to the written tables.
3. Plain loop: the same trials (their λ and seed read back from the trials table) trained one
   after the other in this process with 1 torch thread each, plus the same explanation score.
   The ideal parallel wall time is that sum divided by ``--cpus``.
4. Parallel efficiency = ideal / search wall time (and, excluding the fixed start-up, the
   steady-state efficiency). The overhead is split into a fixed part (from
   building the Tuner to the first trial's start: actor start, imports, data from the object
   store) and a per-trial part (the rest, per trial and slot).
5. ``--quick``: the quick preset's search stage end to end (``python -m study.launch --config
   quick --stage search``: a fresh interpreter, Ray start-up and shutdown included).

The machine's load average is printed: other processes on the machine slow every figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _cpu() -> tuple[float, float]:
    """CPU seconds used so far by this driver and by Ray's daemons (gcs, raylet, agents; not workers)."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    daemons = 0.0
    for c in me.children(recursive=True):
        try:
            if not c.name().startswith("ray::") or "Agent" in c.name():  # gcs_server, raylet, agents
                ct = c.cpu_times()
                daemons += ct.user + ct.system
        except psutil.Error:
            pass
    return t.user + t.system, daemons


def plain_loop(cfg, trials, splits) -> list[float]:
    """Seconds per trial when the trials run one after the other, 1 thread each, no Ray."""
    import torch

    from foundations.data import to_float
    from evaluation.metrics.morf import explanation_score
    from trainables.trainable import trial_config

    torch.set_num_threads(1)
    out = []
    for _, row in trials.iterrows():
        conf = {
            "train": cfg.train_config("mnist", row["penalty"]),
            "lam": row["lam"],
            "lr": row["lr"],
            "seed": int(row["seed"]),
        }
        t0 = time.perf_counter()
        from trainables.train import TrainRun

        run = TrainRun(trial_config(conf), splits)
        x = to_float(splits.val_x[: cfg.search.explain_n])
        run.extra_metrics = lambda m, _s: {"val_morf": explanation_score(m, x, cfg.search.morf_levels)}
        while run.epoch < run.cfg.epochs:
            run.run_epoch()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--penalty", default="gradient")
    p.add_argument("--data-fraction", type=float, default=0.2)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="also time the quick preset end to end")
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)

    import ray

    from study import search
    from study.config import load_config

    tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
    cfg = load_config(
        "quick",
        [
            "name=bench",
            f"output={tmp / 'search'}",
            "datasets=[mnist]",
            f"penalties=[{a.penalty}]",
            f"trials={a.trials}",
            "epochs=1",
            f"data_fraction={a.data_fraction}",
            "val_limit=2000",
            "explain_n=100",
            f"max_concurrent_trials={a.cpus}",
            "resources.cpu=1",
            "sampler=random",
        ],
    )
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
    t_ray = time.perf_counter() - t0
    try:
        search.check_output(cfg)
        splits = search.search_splits(cfg, "mnist")
        prov = {"git_commit": search.git_commit(), "versions": "{}"}
        os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
        t_start = time.time()
        cpu0 = _cpu()
        t0 = time.perf_counter()
        trials = search.run_one(cfg, "mnist", a.penalty, lambda: splits, prov, verbose=0, log=lambda s: None)
        t_search = time.perf_counter() - t0
        cpu_driver, cpu_daemons = (b - a for a, b in zip(cpu0, _cpu()))
    finally:
        t0 = time.perf_counter()
        ray.shutdown()
        t_down = time.perf_counter() - t0

    ok = trials[trials["status"] == "ok"]
    in_ray = (ok["end_time"] - ok["start_time"]).dt.total_seconds()
    first_start = ok["start_time"].min().timestamp() - t_start
    plain = plain_loop(cfg, ok, splits)
    ideal = sum(plain) / a.cpus
    eff = ideal / t_search
    per_trial = (t_search - first_start - ideal) * a.cpus / max(len(ok), 1)
    print(
        f"\nsearch: {len(ok)} trials of mnist/{a.penalty}, data_fraction {a.data_fraction}, 1 epoch, "
        f"{a.cpus} CPUs, {a.cpus} at once"
    )
    print(f"  Ray start-up (ray.init)          {t_ray:7.1f} s   (shutdown {t_down:.1f} s)")
    print(f"  search wall time                 {t_search:7.1f} s")
    print(f"  plain loop, sum of trials        {sum(plain):7.1f} s   ({sum(plain) / len(plain):.2f} s per trial)")
    print(f"  ideal wall on {a.cpus} CPUs              {ideal:7.1f} s")
    print(f"  parallel efficiency              {eff:7.0%}")
    print(
        f"  ... after the first trial starts {ideal / (t_search - first_start):7.0%}   (steady state, "
        "start-up excluded)"
    )
    print(f"  fixed overhead (to first trial)  {first_start:7.1f} s")
    print(
        f"  per-trial overhead               {per_trial:7.2f} s   (trial in Ray: {in_ray.mean():.2f} s vs plain "
        f"{sum(plain) / len(plain):.2f} s)"
    )
    print(f"  CPU of the driver / Ray daemons  {cpu_driver:7.1f} s / {cpu_daemons:.1f} s during the search")
    if a.quick:
        out = tmp / "quick"
        env = {**os.environ, "SALIENCY_DATA_ROOT": os.environ.get("SALIENCY_DATA_ROOT", str(REPO / "data"))}
        t0 = time.perf_counter()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "study.launch",
                "--config",
                "quick",
                "--stage",
                "search",
                "--output",
                str(out),
                "-q",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        t_quick = time.perf_counter() - t0
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:])
            return 1
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("[search]", "[study]"))]
        print("\nquick preset end to end (python -m study.launch --config quick --stage search):")
        print("\n".join("  " + ln for ln in lines))
        print(f"  wall time                        {t_quick:7.1f} s")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
