"""cnn4b on Fashion-MNIST, cross-entropy only: torch's BatchNorm versus constant batch statistics.

    python bench/bench_batchnorm.py [--seeds 0 1 2] [--epochs 2] [--data-fraction 0.1]

cnn4b's BatchNorm (trainables.models.BatchNorm2d) normalises with the batch's statistics but, by
default, treats them as constants in backpropagation (``stop_grad_stats``), which makes the input
gradient exactly per-sample (docs/spec.md §3). This measures what that costs the plain cross-entropy model:
the same training (same seed, data, order, dropout) with ``stop_grad_stats`` on (the project's
default until this measurement, ``TrainConfig(batch_norm="constant")``) and off (torch's BatchNorm, now
the default for the loss, ``batch_norm="standard"``), test accuracy on all 10 000 test images, per seed, and the
paired difference with a t-interval over seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from foundations import data as data_mod  # noqa: E402
from foundations.statistics import t_interval  # noqa: E402
from trainables.train import TrainConfig, TrainRun, accuracy  # noqa: E402


def run(splits, seed: int, epochs: int, fraction: float, constant: bool) -> tuple[float, float]:
    cfg = TrainConfig(dataset="fashion-mnist", model="cnn4b", penalty="none", lam=0.0, epochs=epochs, seed=seed,
                      data_fraction=fraction, device="cpu", val_limit=1,
                      batch_norm="constant" if constant else "standard")
    t0 = time.perf_counter()
    r = TrainRun(cfg, splits)
    for _ in r:
        pass
    return accuracy(r.model, splits.test_x, splits.test_y), time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    splits = data_mod.load("fashion-mnist")
    rows = []
    print(f"cnn4b, Fashion-MNIST, CE only, {a.epochs} epoch(s) on {a.data_fraction:g} of the training split, "
          f"test accuracy on {len(splits.test_y)} images", flush=True)
    print(f"{'seed':>4} {'constant stats':>15} {'torch BN':>9} {'diff (pts)':>11} {'s':>6}", flush=True)
    for s in a.seeds:
        c, tc = run(splits, s, a.epochs, a.data_fraction, True)
        t, tt = run(splits, s, a.epochs, a.data_fraction, False)
        rows.append((c, t))
        print(f"{s:>4} {100 * c:>14.2f}% {100 * t:>8.2f}% {100 * (t - c):>+11.2f} {tc + tt:>6.0f}", flush=True)
    d = np.array([t - c for c, t in rows])
    lo, hi = t_interval(d)
    print(f"\ntorch BN − constant statistics: {100 * d.mean():+.2f} points, 95% t-interval "
          f"[{100 * lo:+.2f}, {100 * hi:+.2f}] over {len(d)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
