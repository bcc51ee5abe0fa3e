"""Build a timing profile from a finished study: ``python -m study.profile OUTPUT_DIR [--out profiles/NAME.yaml]``.

Reads the study's ``trials``, ``epochs`` and ``roar`` tables (and the evaluation stage's task markers for the
metric chunks' durations) and writes the YAML that ``study.launch --simulate PROFILE`` reads
(``foundations/profile.py`` describes its keys). Per (dataset, model, penalty, device) the ``epoch_seconds``
is the mean of the epochs table's ``seconds``; the per-image costs let other data sizes scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from foundations import profile, storage
from study.document import shown_command, shown_folder
from foundations import schemas as R

# evaluation.accuracy.METRIC (that module imports torch): one row per test image, not per explained image
WHOLE_TEST_SET = ("full_test_accuracy",)
UNMEASURED_MODELS = {"cnn4b": {"like": "cnn3b", "factor": 23.0}}  # 3 ms vs 0.13 ms per forward, 1 core (docs/search.md)


def _device(train_config: str) -> str:
    return "gpu" if str(json.loads(train_config or "{}").get("device", "cpu")).startswith("cuda") else "cpu"


def epoch_rows(trials: pd.DataFrame, epochs: pd.DataFrame) -> list[dict]:
    """Per (dataset, model, penalty, device): the mean epoch seconds and the per-image costs."""
    t = trials.assign(device=trials["train_config"].map(_device))
    e = epochs.merge(t[["trial_id", "dataset", "penalty", "model", "device", "data_fraction", "val_fraction",
                        "val_limit", "explain_n"]], on=["trial_id", "dataset", "penalty"])
    e = e[np.isfinite(e["seconds"])]
    rows = []
    for (d, m, p, dev), g in e.groupby(["dataset", "model", "penalty", "device"], sort=True):
        n_train = float((g["samples_per_s"] * g["train_seconds"]).mean())
        _, n_val = profile.split_sizes(float(g["data_fraction"].iloc[0]), float(g["val_fraction"].iloc[0]),
                                       int(g["val_limit"].iloc[0]))
        explain_n = int(g["explain_n"].iloc[0])
        val = (g["seconds"] - g["train_seconds"] - g["morf_seconds"].fillna(0)).clip(lower=0).mean()
        rows.append({
            "dataset": d, "model": m, "penalty": p, "device": dev,
            "epoch_seconds": round(float(g["seconds"].mean()), 6),
            "train_s_per_image": float(g["train_seconds"].mean()) / max(n_train, 1.0),
            "val_s_per_image": float(val) / max(n_val, 1),
            "morf_s_per_image": float(g["morf_seconds"].fillna(0).mean()) / max(explain_n, 1),
            "n_train": int(round(n_train)), "n_val": int(n_val), "explain_n": explain_n, "epochs_measured": len(g),
        })
    return rows


def start_seconds(trials: pd.DataFrame, epochs: pd.DataFrame) -> tuple[float, float]:
    """(Per-trial time outside its epochs in a reused actor, what a fresh actor adds): a trial's gap is its start
    to end minus the sum of its epoch seconds (``start_time`` counts a fresh actor's imports and data); the first
    trial of each process (by pid, host and start) is a fresh actor's. Without a reused actor in the study the
    whole gap is the fresh actor's (``trial_start_seconds`` 0)."""
    t = trials[["trial_id", "hostname", "pid", "start_time", "end_time"]].copy()
    per = epochs.groupby("trial_id")["seconds"].sum()
    t["gap"] = (t["end_time"] - t["start_time"]).dt.total_seconds() - t["trial_id"].map(per).fillna(0)
    t = t[np.isfinite(t["gap"])].sort_values("start_time")
    if t.empty:
        return 0.0, 0.0
    fresh = ~t.duplicated(["hostname", "pid"])
    reused = float(t.loc[~fresh, "gap"].mean()) if (~fresh).any() else 0.0
    return max(0.0, reused), max(0.0, float(t.loc[fresh, "gap"].mean()) - max(0.0, reused))


def metric_chunk_seconds(out: str, cfg: dict) -> float | None:
    """Seconds per (image x attribution method) of the metric chunks: marker (start) to file (end) per task."""
    ev = cfg.get("evaluation") or {}
    methods = max(1, len(ev.get("methods") or [1]))
    per = []
    for rel in storage.list_files(storage.join(out, "evaluation"), ".parquet"):
        f = Path(out) / "evaluation" / rel
        marker = Path(out) / ".tasks" / f"evaluation__{f.stem}.json"
        if not marker.is_file():
            continue
        start = json.loads(marker.read_text())["time"]
        rows = pd.read_parquet(f, columns=["metric", "sample"])
        n = rows.loc[~rows["metric"].isin(WHOLE_TEST_SET), "sample"].nunique()  # the chunk's explained images
        if n:
            per.append((f.stat().st_mtime - start) / (n * methods))
    return float(np.mean(per)) if per else None


def build(out: str) -> dict:
    """The profile of the finished study in ``out`` (a local folder)."""
    out = storage.normalize(out)
    cfg = yaml.safe_load(storage.read_text(storage.join(out, "config.yaml")))
    trials, epochs = R.read_table(out, "trials"), R.read_table(out, "epochs")
    if trials.empty or epochs.empty:
        raise ValueError(f"{out}: no trials/epochs tables (a finished study is needed)")
    roar = R.read_table(out, "roar", R.ROAR, R.PARTITIONS["evaluation"]) if storage.exists(
        storage.join(out, "roar")) else pd.DataFrame()
    r_epochs = int(((cfg.get("evaluation") or {}).get("roar") or {}).get("epochs", 1))
    ev = {"metrics_s_per_image_method": metric_chunk_seconds(out, cfg) or 0.0, "ranks_s_per_image": 0.0,
          "roar_s_per_image_epoch": 0.0}
    if len(roar):
        ev["roar_s_per_image_epoch"] = float((roar["seconds"] / (roar["n_train"] * r_epochs)).mean())
        ev["ranks_s_per_image"] = float((roar["ranks_seconds"] / roar["n_train"]).mean())
    rows = epoch_rows(trials, epochs)
    reused, fresh = start_seconds(trials, epochs)
    models = {k: v for k, v in UNMEASURED_MODELS.items() if not any(r["model"] == k for r in rows)}
    prof = {"source": shown_folder(out), "study": str(cfg.get("name", "")), "built": time.strftime("%Y-%m-%d"),
            "trial_start_seconds": round(reused, 6), "actor_start_seconds": round(fresh, 6), "models": models,
            "epochs": rows, "evaluation": ev}
    profile.check(prof, out)
    return prof


def header(out: str) -> str:
    runs = Path(out) / "runs.jsonl"
    last = json.loads(runs.read_text().splitlines()[-1]) if runs.is_file() else {}
    return (f"# Timing profile for `python -m study.launch --simulate` (foundations/profile.py describes the keys).\n"
            f"# Built by `python -m study.profile {shown_folder(out)}` from the study's trials/epochs/roar tables and "
            "task markers.\n"
            f"# Measured run: {shown_command(last.get('command', '?'))} ({last.get('wall_seconds', '?')} s, "
            f"commit {last.get('git_commit', '?')}, {last.get('machine', '?')}).\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="a finished study folder")
    p.add_argument("--out", default=None, help="the profile to write (default: print it)")
    p.add_argument("--note", default="", help="a line for the profile's header")
    a = p.parse_args(argv)
    try:
        prof = build(a.output)
    except (ValueError, OSError, storage.StorageError) as exc:
        print(f"error: OUTPUT_DIR: {exc}; valid choices: a study folder with trials/ and epochs/", file=sys.stderr)
        return 2
    text = header(a.output) + (f"# {a.note}\n" if a.note else "") + yaml.safe_dump(prof, sort_keys=False, width=120)
    if a.out:
        Path(a.out).write_text(text)
        print(f"[profile] {len(prof['epochs'])} epoch row(s) -> {a.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
