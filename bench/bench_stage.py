"""The evaluation stage on a local Ray: parallel efficiency and the ROAR ranking reuse.

    python bench/bench_stage.py [--cpus 2] [--models 2] [--n-samples 200]

Prints, from one run:
1. stage wall time versus the sum of its task times (parallel efficiency = sum / (wall × CPUs);
   target >= 80%), Ray start-up reported separately;
2. ROAR: seconds to rank a (model, method) once versus the seconds that recomputing the ranks in
   every retrain of that pair would cost (fractions × repeats × ranking time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation import stage  # noqa: E402
from foundations import data as data_mod  # noqa: E402
from tests.evaluation.stage_fixtures import make_selected, small_settings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--n-samples", type=int, default=200)
    p.add_argument("--roar-fraction", type=float, default=0.05, help="share of the training split per retrain")
    a = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    mnist = data_mod.load("mnist")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        selected = make_selected(out, mnist)
        s = small_settings(n_samples=a.n_samples, chunk_size=50, roar_fractions=[0.1, 0.5, 0.9], roar_repeats=2,
                           roar_data_fraction=a.roar_fraction, roar_n_test=2000, max_in_flight=0)
        t0 = time.perf_counter()
        ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
        t_start = time.perf_counter() - t0
        try:
            stats = stage.run_stage(selected, s, out, log=lambda _: None)
        finally:
            ray.shutdown()
        ro = pd.read_parquet(out / "roar")
    rank_s = ro.groupby(["model_id", "method"])["ranks_seconds"].first()  # the ranking tasks (one per pair)
    busy = stats["task_seconds"] + rank_s.sum()
    eff = busy / (stats["wall_seconds"] * a.cpus)
    print(f"Ray start-up: {t_start:.1f} s")
    print(
        f"1. {stats['submitted']} tasks + {len(rank_s)} ranking tasks on {a.cpus} CPUs: wall "
        f"{stats['wall_seconds']:.1f} s, "
        f"sum of task times {stats['task_seconds']:.1f} s + ranking {rank_s.sum():.1f} s, parallel efficiency "
        f"{eff:.0%} "
        f"(worker start-up and imports count as overhead)"
    )
    n_retrains = ro.groupby(["model_id", "method"]).size()
    once, per_retrain = rank_s.sum(), (rank_s * n_retrains).sum()
    print(
        f"2. ROAR ranks: computed once per (model, method) {once:.1f} s in total, versus {per_retrain:.1f} s "
        f"if recomputed in each of the {int(n_retrains.sum())} retrains (saving {per_retrain - once:.1f} s, "
        f"{per_retrain / max(once, 1e-9):.1f}x); mean retrain {ro['seconds'].mean():.1f} s"
    )


if __name__ == "__main__":
    main()
