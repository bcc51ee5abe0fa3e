"""The simulated evaluation tasks: the stage's task graph and files, each task body a sleep (no torch).

With ``--simulate`` the stage's :class:`~evaluation.stage.Runner` submits these instead of the real
bodies: the same tasks (metric chunks, ROAR rankings shared by their retrains, ROAR retrains) with the
same resources, writing a file of the same table, partition and key, so the stage's resume (missing
files) and the curves work as in a real run. A task gets a plain ``spec`` dict built in the driver by
:func:`spec` (kind, key, sizes and the predicted seconds from the profile); its rows hold seeded
plausible values (:func:`foundations.profile.uniform`), not measurements.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from foundations import profile, seeds
from foundations import schemas as results

CURVE_LEVELS = 11  # points of a simulated curve (levels 0, 0.1, ..., 1)


def settings(cfg) -> dict:
    """The stage's ``simulate`` setting of a study config ({} for a real run)."""
    sim = getattr(cfg, "simulate", None)
    if sim is None or not sim.enabled:
        return {}
    return {"profile": str(sim.profile), "time_scale": float(sim.time_scale)}


def spec(task, s, n_test: int) -> dict:
    """What a simulated task needs, torch-free: its identity, sizes and predicted seconds (unscaled)."""
    ev, prof = s.evaluation, profile.load(s.simulate["profile"])
    d = {"kind": task.kind, "table": task.table, "key": task.key, "dataset": task.dataset, "penalty": task.penalty,
         "model_id": task.model_id, "method": task.method, "chunk": task.chunk, "fraction": task.fraction,
         "repeat": task.repeat, "study": s.study, "seed": ev.seed, "time_scale": s.simulate["time_scale"]}
    if task.kind == "metrics":
        n = max(0, min(ev.chunk_size, min(ev.n_samples, n_test) - task.chunk * ev.chunk_size))
        d.update(n_images=n, methods=list(ev.methods), metrics=list(ev.evaluate_metrics),
                 seconds=profile.metrics_seconds(prof, n, len(ev.methods)))
    else:
        n_train, _ = profile.split_sizes(ev.roar.data_fraction, 0.1, 0)
        d.update(n_train=n_train, n_test=ev.roar.n_test or n_test, replacement=ev.roar.replacement,
                 seconds=profile.roar_seconds(prof, n_train, ev.roar.epochs),
                 ranks_seconds=profile.ranks_seconds(prof, n_train))
    return d


def _node() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:
        return ""


def _marker(sp: dict, out: str) -> None:
    """Record which process runs the task (``.tasks/<table>__<key>.json``), as the real tasks do."""
    import json

    from foundations import storage

    storage.write_text(storage.join(out, ".tasks", f"{sp['table']}__{sp['key']}.json"),
                       json.dumps({"pid": os.getpid(), "node_id": _node(), "time": time.time()}))


def metrics_task(sp: dict, out: str) -> dict:
    """Sleep a metric chunk's predicted seconds, write its ``evaluation`` file (every method x metric output)."""
    from evaluation.metrics.registry import REGISTRY

    _marker(sp, out)
    t0 = time.perf_counter()
    profile.sleep(sp["seconds"], sp["time_scale"])
    n, seed = sp["n_images"], seeds.mix(sp["seed"], sp["chunk"])
    samples = sp["chunk"] * 10_000 + np.arange(n)  # stand-ins for the test-set indices (never used as images)
    frames = []

    def add(method: str, metric: str, levels) -> None:
        lv = np.repeat(np.asarray(levels, float), n)
        u = profile.uniform(seed, sp["model_id"], method, metric)
        vals = np.clip(u + 0.1 * np.sin(np.arange(len(lv)) + 7 * u), 0, 1)
        frames.append(pd.DataFrame({"method": method, "metric": metric, "level": lv,
                                    "sample": np.tile(samples, len(levels)), "value": vals}))

    add("", "accuracy", [np.nan])
    for group in sp["metrics"]:
        for o in REGISTRY[group].outputs:
            levels = np.linspace(0, 1, CURVE_LEVELS) if o.level else [np.nan]
            for method in ([""] if o.model_level else sp["methods"]):
                add(method, o.name, levels)
    df = pd.concat(frames, ignore_index=True)
    df = df.assign(study=sp["study"], dataset=sp["dataset"], penalty=sp["penalty"], model_id=sp["model_id"],
                   seed=seed, chunk=sp["chunk"], node_id=_node())
    results.write_table(df, out, "evaluation", results.PARTITIONS["evaluation"], sp["key"], schema=results.EVALUATION)
    return {"key": sp["key"], "seconds": time.perf_counter() - t0, "rows": len(df), "node_id": _node()}


def ranks_task(sp: dict) -> dict:
    """Sleep a ROAR ranking's predicted seconds (its retrains wait for it, as for the real ranks)."""
    t0 = time.perf_counter()
    profile.sleep(sp["ranks_seconds"], sp["time_scale"])
    return {"seconds": time.perf_counter() - t0}


def roar_task(sp: dict, ranked: dict, out: str) -> dict:
    """Sleep a ROAR retrain's predicted seconds, write its ``roar`` file (a seeded accuracy)."""
    _marker(sp, out)
    t0 = time.perf_counter()
    profile.sleep(sp["seconds"], sp["time_scale"])
    acc = 0.9 - 0.5 * sp["fraction"] * (0.5 + profile.uniform(sp["seed"], sp["model_id"], sp["method"],
                                                                sp["fraction"], sp["repeat"]))
    seconds = time.perf_counter() - t0
    df = pd.DataFrame([{
        "study": sp["study"], "dataset": sp["dataset"], "penalty": sp["penalty"], "model_id": sp["model_id"],
        "method": sp["method"], "fraction": sp["fraction"], "repeat": sp["repeat"], "accuracy": acc,
        "seconds": seconds, "ranks_seconds": ranked["seconds"], "n_train": sp["n_train"], "n_test": sp["n_test"],
        "replacement": sp["replacement"], "seed": sp["seed"] + sp["repeat"], "node_id": _node(), "pid": os.getpid(),
    }])
    results.write_table(df, out, "roar", results.PARTITIONS["evaluation"], sp["key"], schema=results.ROAR)
    return {"key": sp["key"], "seconds": seconds, "rows": 1, "node_id": _node()}
