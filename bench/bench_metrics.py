"""Benchmark the evaluation metrics: ours (batched tensors) vs Quantus vs a per-image loop.

On N real MNIST test images (default 1000) with saliency maps of a quickly trained cnn3b
(1 epoch on 20% of the training split), times each metric three ways and prints, from one run:
seconds per 1000 images for ours, Quantus's closest metric and an obviously-correct per-image
Python loop, the speed-up ratios, and whether the values agree. Quantus and the loop are timed
on a subset (``--quantus-n``, ``--loop-n`` images) and scaled per image; ours runs on all N.
Then the full evaluation of one model (4 methods × all metrics) on the N images: wall time and
the share of each stage::

    python bench/bench_metrics.py --n 1000
    python bench/bench_metrics.py --smoke        # a quick end-to-end check
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.attributions import attribute  # noqa: E402
from evaluation.evaluate import DEFAULT_METHODS, evaluate_model  # noqa: E402
from evaluation.metrics import METRICS  # noqa: E402
from evaluation.metrics.complexity import complexity  # noqa: E402
from evaluation.metrics.faithfulness import draw_subsets, faithfulness_correlation  # noqa: E402
from evaluation.metrics.gaussian import draw_noise, gaussian  # noqa: E402
from evaluation.metrics.morf import morf  # noqa: E402
from foundations import data as data_mod  # noqa: E402
from tests.evaluation.test_morf import slow_morf  # noqa: E402
from trainables.train import TrainConfig, TrainRun  # noqa: E402


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------------- per-image loops
def loop_complexity(a):
    out = []
    for i in range(a.shape[0]):
        p = a[i].flatten().double().abs()
        p = p / p.sum()
        out.append(-(p * torch.log(p + 1e-12)).sum().item())
    return torch.tensor(out, dtype=torch.float64)


def loop_morf(model, x, y, a, levels=20):
    """The per-image reference loop of the tests (tests/evaluation/test_morf.py), scores only."""
    return slow_morf(model, x, y, a, levels)[0]


def loop_faithfulness_correlation(model, x, y, a, subsets):
    from scipy.stats import pearsonr

    out = []
    for i in range(x.shape[0]):
        with torch.no_grad():
            f0 = model(x[i : i + 1])[0, y[i]].item()
        sums, drops = [], []
        for m in range(subsets.shape[1]):
            s = subsets[i, m]
            xm = x[i].flatten().clone()
            xm[s] = 0.0
            with torch.no_grad():
                drops.append(f0 - model(xm.view(1, 1, 28, 28))[0, y[i]].item())
            sums.append(a[i].flatten()[s].double().sum().item())
        out.append(float(pearsonr(sums, drops)[0]))
    return torch.tensor(out, dtype=torch.float64)


def loop_max_sensitivity(model, x, y, a, noise, sigma):
    out = []
    for i in range(x.shape[0]):
        best = 0.0
        for k in range(noise.shape[0]):
            ap = attribute(model, (x[i] + sigma * noise[k, i])[None], y[i : i + 1], "saliency")[0]
            best = max(best, ((ap - a[i]).norm() / a[i].norm()).item())
        out.append(best)
    return torch.tensor(out, dtype=torch.float64)


# ----------------------------------------------------------------------------- report
def line(name, n, ours_s, n_q, q_s, n_l, l_s, agree):
    per = lambda s, m: s / m * 1000 if s is not None else float("nan")  # noqa: E731
    o, q, lo = per(ours_s, n), per(q_s, n_q), per(l_s, n_l)
    print(f"{name:<26} {o:>9.2f} {q:>11.2f} {lo:>10.2f} {q / o:>9.1f}x {lo / o:>9.1f}x   {agree}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="test images (default 1000)")
    p.add_argument("--quantus-n", type=int, default=100, help="images timed with Quantus (scaled per image)")
    p.add_argument("--loop-n", type=int, default=20, help="images timed with the per-image loop (scaled)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a quick end-to-end check")
    p.add_argument("--skip-full", action="store_true", help="skip the full 4-method evaluation")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    a = p.parse_args(argv)
    if a.smoke:
        a.n, a.quantus_n, a.loop_n = 32, 8, 4
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    import quantus

    splits = data_mod.load("mnist", a.data_root)
    t0 = time.perf_counter()
    run = TrainRun(
        TrainConfig(dataset="mnist", penalty="none", epochs=1, batch_size=64, data_fraction=0.2, seed=a.seed), splits
    )
    rec = run.run_epoch()
    model = run.model.eval()
    print(
        f"model: cnn3b, 1 epoch on 20% of MNIST train, val acc {rec['val_acc']:.4f}, {time.perf_counter() - t0:.1f} s; "
        f"torch {torch.__version__}, quantus {quantus.__version__}, {a.threads} threads, device cpu",
        flush=True,
    )
    x = data_mod.to_float(splits.test_x[: a.n])
    labels = splits.test_y[: a.n]
    with torch.no_grad():
        t = model(x).argmax(1)
    attr, s_attr = timed(attribute, model, x, t, "saliency")
    print(
        f"N = {a.n} test images; saliency maps in {s_attr:.2f} s; Quantus on {min(a.quantus_n, a.n)} images, "
        f"loop on {min(a.loop_n, a.n)} images (both scaled per image)\n",
        flush=True,
    )
    nq, nl = min(a.quantus_n, a.n), min(a.loop_n, a.n)
    xn, tn, an = x.numpy(), t.numpy(), attr.numpy()

    def explain(model, inputs, targets, **kw):
        return attribute(model, torch.as_tensor(inputs), torch.as_tensor(targets), "saliency").numpy()

    print(
        f"{'metric (s per 1000 images)':<26} {'ours':>9} {'Quantus':>11} {'loop':>10} {'Q/ours':>10} "
        f"{'loop/ours':>10}   values"
    )
    # Complexity: identical definitions.
    ours, s_o = timed(complexity, model, x, t, attr)
    q, s_q = timed(
        quantus.Complexity(abs=True, normalise=False, disable_warnings=True),
        model=model,
        x_batch=xn[:nq],
        y_batch=tn[:nq],
        a_batch=an[:nq].astype(np.float64),
        device="cpu",
    )
    lp, s_l = timed(loop_complexity, attr[:nl])
    d_q = np.abs(ours[:nq].numpy() - np.asarray(q)).max()
    d_l = (ours[:nl] - lp).abs().max().item()
    line("Complexity", a.n, s_o, nq, s_q, nl, s_l, f"agree: Quantus max|diff| {d_q:.1e}, loop {d_l:.1e}")

    # Faithfulness correlation (Bhatt): Quantus's defaults (100 subsets of 224 pixels, baseline 0, logits).
    frac = 224 / 784
    subsets = draw_subsets(a.n, 784, 100, frac, a.seed)
    ours, s_o = timed(faithfulness_correlation, model, x, t, attr, subsets=subsets)
    np.random.seed(a.seed)
    q, s_q = timed(
        quantus.FaithfulnessCorrelation(
            nr_runs=100,
            subset_size=224,
            abs=False,
            normalise=False,
            perturb_baseline="black",
            return_aggregate=False,
            disable_warnings=True,
        ),
        model=model,
        x_batch=xn[:nq],
        y_batch=tn[:nq],
        a_batch=an[:nq],
        device="cpu",
        softmax=False,
        batch_size=256,
    )
    lp, s_l = timed(loop_faithfulness_correlation, model, x[:nl], t[:nl], attr[:nl], subsets[:nl])
    d_l = (ours[:nl] - lp).abs().max().item()
    line(
        "FaithfulnessCorrelation",
        a.n,
        s_o,
        nq,
        s_q,
        nl,
        s_l,
        f"loop max|diff| {d_l:.1e}; Quantus draws other subsets: mean {np.mean(q):.3f} vs ours {ours[:nq].mean():.3f}",
    )

    # MoRF vs PixelFlipping (49 pixels per step = 16 steps; a different removal grid).
    ours, s_o = timed(morf, model, x, t, attr)
    q, s_q = timed(
        quantus.PixelFlipping(
            features_in_step=49,
            abs=False,
            normalise=False,
            perturb_baseline="black",
            return_auc_per_sample=False,
            disable_warnings=True,
        ),
        model=model,
        x_batch=xn[:nq],
        y_batch=tn[:nq],
        a_batch=an[:nq],
        device="cpu",
        softmax=True,
        batch_size=256,
    )
    lp, s_l = timed(loop_morf, model, x[:nl], t[:nl], attr[:nl])
    d_l = (ours.score[:nl] - lp).abs().max().item()
    line("MoRF (Q: PixelFlipping)", a.n, s_o, nq, s_q, nl, s_l, f"loop max|diff| {d_l:.1e}; Quantus: other definition")

    # Max-sensitivity, Gaussian noise σ = 0.5, 10 draws (= Quantus's definition with gaussian noise).
    k, sigma = 10, 0.5
    noise = draw_noise(k, x.shape, a.seed)
    fn = functools.partial(attribute, model, method="saliency")
    ours, s_o = timed(gaussian, model, x, labels, attr, sigmas=[sigma], noise=noise, attribute_fn=fn, target=t)
    np.random.seed(a.seed)
    q, s_q = timed(
        quantus.MaxSensitivity(
            nr_samples=k,
            perturb_func=quantus.functions.perturb_func.batch_gaussian_noise,
            perturb_func_kwargs={"perturb_std": sigma},
            abs=False,
            normalise=False,
            disable_warnings=True,
        ),
        model=model,
        x_batch=xn[:nq],
        y_batch=tn[:nq],
        a_batch=an[:nq],
        device="cpu",
        explain_func=explain,
        explain_func_kwargs={},
        batch_size=256,
    )
    lp, s_l = timed(loop_max_sensitivity, model, x[:nl], t[:nl], attr[:nl], noise[:, :nl], sigma)
    ms = ours.max_sensitivity[:, 0]
    d_l = (ms[:nl] - lp).abs().max().item()
    line(
        "MaxSensitivity (σ=0.5)",
        a.n,
        s_o,
        nq,
        s_q,
        nl,
        s_l,
        f"loop max|diff| {d_l:.1e}; Quantus draws other noise: mean {np.mean(q):.3f} vs ours {ms[:nq].mean():.3f}",
    )
    print("(ours' MaxSensitivity time also includes the accuracy under the same noise)")

    # The floor: these metrics are made of the model's own passes. Time the passes alone (the same
    # number per image, batched, nothing else) and compare: a ratio near 1 leaves nothing to gain.
    with torch.no_grad():
        _, s_fwd = timed(lambda: [model(x[i : i + 256]) for i in range(0, a.n, 256)])
    _, s_sal = timed(attribute, model, x, t, "saliency")
    fwd, sal = s_fwd / a.n * 1000, s_sal / a.n * 1000  # seconds per 1000 images, one pass each
    print(f"\nfloor: one forward pass {fwd:.3f} s and one saliency map {sal:.3f} s per 1000 images")
    for name, passes, secs in [
        ("FaithfulnessCorrelation", f"{100 + 1} forwards", 101 * fwd),
        ("MoRF", "20 forwards", 20 * fwd),
        ("MaxSensitivity (σ=0.5)", f"{k} maps + {k + 1} forwards", k * sal + (k + 1) * fwd),
    ]:
        print(f"  {name:<24} {passes:>22} per image: floor {secs:6.2f} s per 1000 images")

    if a.skip_full:
        return 0
    timings: dict[str, float] = {}
    df, wall = timed(
        evaluate_model,
        model,
        x,
        labels,
        methods=DEFAULT_METHODS,
        metrics=METRICS,
        n_samples=a.n,
        seed=a.seed,
        dataset="mnist",
        penalty="none",
        model_id="bench",
        timings=timings,
    )
    print(
        f"\nfull evaluation: {len(DEFAULT_METHODS)} methods × {len(METRICS)} metric groups on {a.n} images: "
        f"{wall:.1f} s wall, {len(df)} rows"
    )
    for stage, sec in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<14} {sec:8.1f} s  {100 * sec / wall:5.1f} %")
    agg = df[df["sample"] == -1]
    scal = agg[agg["level"].isna()].pivot_table(index="metric", columns="method", values="value")
    print("\nmean values:\n" + scal.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
