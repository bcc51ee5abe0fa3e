"""Training-step cost of each penalty, batched vs per-sample saliency, epoch throughput.

Prints ratios measured side by side in one run (CPU by default)::

    python bench/bench_training.py             # full
    python bench/bench_training.py --smoke     # seconds, for CI-style checks

1. time per training step with each penalty / the plain (``none``) step, both models,
   batch 64 and 128 (targets: gradient, smoothness, locality, consistency <= 2.5x;
   fidelity <= 3x; symmetry <= 4.5x);
2. our one-pass batched saliency vs the per-sample autograd loop at batch 30 (target >= 10x),
   with the maximum absolute difference of the values;
3. one epoch of MNIST (the 54k training split) with cnn3b, plain and with each penalty,
   in samples per second (``--epoch-fraction`` to shorten).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from foundations import data as data_mod
from trainables.models import build_model
from trainables.penalties import PENALTIES
from trainables.saliency import input_gradient
from trainables.train import TrainConfig, TrainRun, training_step_loss


def step_time(model_name: str, penalty: str, x, y, steps: int, gen_seed: int = 0) -> float:
    torch.manual_seed(0)
    model = build_model(model_name).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cfg = TrainConfig(dataset="mnist" if model_name == "cnn3b" else "fashion-mnist", penalty=penalty, lam=0.1)
    gen = torch.Generator().manual_seed(gen_seed)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss, _, _ = training_step_loss(model, x, y, cfg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_sample_saliency(model, x, y):
    out = torch.empty_like(x)
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[0, y[i]], xi)
        out[i] = g[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--epoch-fraction", type=float, default=1.0, help="fraction of the MNIST epoch in part 3")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    steps = 2 if a.smoke else a.steps
    mnist = data_mod.load("mnist")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    print("\n1. training step time / plain step (median of", steps, "steps)")
    batches = (64,) if a.smoke else (64, 128)
    models = ("cnn3b",) if a.smoke else ("cnn3b", "cnn4b")
    header = f"{'model':6} {'batch':>5} " + " ".join(f"{n:>11}" for n in PENALTIES)
    print(header)
    for m in models:
        for b in batches:
            x, y = data_mod.to_float(mnist.train_x[:b]), mnist.train_y[:b]
            base = step_time(m, "none", x, y, steps)
            cells = []
            for name in PENALTIES:
                t = base if name == "none" else step_time(m, name, x, y, steps)
                cells.append(f"{t / base:10.2f}x" if name != "none" else f"{t * 1e3:9.1f}ms")
            print(f"{m:6} {b:>5} " + " ".join(cells))

    print("\n2. batched saliency vs per-sample autograd loop, batch 30")
    for m in models:
        torch.manual_seed(0)
        model = build_model(m).eval()  # eval: the loop's single-sample forwards are then valid per-sample
        x, y = data_mod.to_float(mnist.train_x[:30]), mnist.train_y[:30]
        reps = 3 if a.smoke else 10
        t0 = time.perf_counter()
        for _ in range(reps):
            _, g = input_gradient(model, x, y, create_graph=False)
        t_batch = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        for _ in range(reps):
            ref = per_sample_saliency(model, x, y)
        t_loop = (time.perf_counter() - t0) / reps
        diff = (g - ref).abs().max().item()
        print(
            f"{m}: batched {t_batch * 1e3:.2f} ms, loop {t_loop * 1e3:.2f} ms, speed-up {t_loop / t_batch:.1f}x, "
            f"max |diff| {diff:.2e}"
        )

    frac = 0.02 if a.smoke else a.epoch_fraction
    print(f"\n3. one epoch of MNIST with cnn3b (batch 30, {frac:.0%} of the 54k training split), samples/s")
    for name in PENALTIES:
        cfg = TrainConfig(
            dataset="mnist", penalty=name, lam=0.1, epochs=1, batch_size=30, data_fraction=frac, val_limit=1000
        )
        rec = TrainRun(cfg, mnist).run_epoch()
        print(
            f"{name:12} {rec['samples_per_s']:9.0f} samples/s  ({rec['train_seconds']:.1f} s, val acc "
            f"{rec['val_acc']:.3f})"
        )


if __name__ == "__main__":
    main()
