"""The distributed evaluation stage: the selected models' metrics and ROAR retrains as Ray tasks.

Given the study's ``selected`` table (one model per dataset × penalty), :func:`plan_tasks` lists every
unit of work under a deterministic key:

- ``metrics`` tasks: one per (model, chunk of the evaluated test images), computing every
  attribution method and every per-image metric (``evaluation.evaluate.evaluate_model``; the
  model-level rows, e.g. accuracy under noise, have ``method = ""``);
- ``roar`` tasks: one per (model, method, fraction, repeat), plus a random-ranking control per
  dataset (attached to the dataset's ``none`` model, method ``random``). Each retrain needs the
  pixel ranks of its (model, method): those are computed once by a ``ranks`` task and shared
  through the object store by all fractions and repeats.

Each task writes its own Parquet file (``<table>/dataset=…/penalty=…/<key>.parquet``, written
to a temporary name and renamed) and :func:`run_stage` first lists the files that exist, so a rerun
submits only the missing keys: after a crash, after deleting one file, or after adding a
penalty. Tasks declare their resources (CPU, fractional GPU), at most ``max_in_flight`` run at
once, and a task whose worker dies is retried (``max_retries``). The ``curves`` table is
derived from the other two at the end of every run (cheap, rewritten whole; :mod:`evaluation.tables`).
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from evaluation import simulated
from evaluation.config import Evaluation
from foundations import model_paths, schemas as results, seeds, storage
from foundations.schemas import EVALUATION, GALLERY, ROAR

from evaluation.tables import PARTS, STAGE_SCHEMAS, write_curves


@dataclass(frozen=True)
class Task:
    """One unit of work; ``key`` names its output file, ``table`` its table."""

    kind: str  # "metrics" | "roar"
    dataset: str
    penalty: str
    model_id: str
    method: str
    chunk: int = 0
    fraction: float = 0.0
    repeat: int = 0
    settings: str = ""  # fingerprint of every setting that changes the task's rows (see fingerprints)
    map_model: str = ""  # "crossmap": the model whose maps score model_id (evaluation/cross_maps.py)

    @property
    def table(self) -> str:
        return "evaluation" if self.kind in ("metrics", "crossmap") else "roar"

    @property
    def key(self) -> str:
        fp = f"__s{self.settings}" if self.settings else ""
        if self.kind == "metrics":
            return f"{self.model_id}__c{self.chunk:03d}{fp}"
        if self.kind == "crossmap":
            return f"{self.model_id}__maps-{self.map_model}__c{self.chunk:03d}{fp}"
        return f"{self.model_id}__{self.method or 'clean'}__t{self.fraction:.2f}__r{self.repeat}{fp}"

    def path(self, out: Path | str) -> Path | str:
        """The task's file: a Path under a local ``out``, a URI under a remote one (s3://…)."""
        p = storage.join(out, self.table, f"dataset={self.dataset}", f"penalty={self.penalty}", f"{self.key}.parquet")
        return p if storage.is_remote(p) else Path(p)


@dataclass
class StageSettings:
    """One run of the stage: the study's evaluation section and where to run it.

    Args:
        study: the study's name (recorded in every row).
        evaluation: what to compute (:class:`evaluation.config.Evaluation`, the one definition).
        data_root: prepared data folder ('' = ``$SALIENCY_DATA_ROOT`` or ``./data``).
        cpu, gpu: resources of one task.
        max_in_flight: tasks submitted at once (0 = twice the cluster's CPUs / ``cpu``).
        max_retries: Ray's retries of a task whose worker died.
    """

    study: str
    evaluation: Evaluation = field(default_factory=Evaluation)
    data_root: str = ""
    cpu: float = 1.0
    gpu: float = 0.0
    max_in_flight: int = 0
    max_retries: int = 3
    simulate: dict = field(default_factory=dict)  # {profile, time_scale}: sleeping tasks (evaluation/simulated.py)


def settings_from_config(cfg) -> StageSettings:
    """The stage's run of a ``study.config.StudyConfig``: its evaluation section, data and resources."""
    return StageSettings(study=cfg.name, evaluation=cfg.evaluation, data_root=str(cfg.data_path),
                         cpu=cfg.resources.cpu, gpu=cfg.resources.gpu, simulate=simulated.settings(cfg))


def fingerprints(s: StageSettings) -> dict[str, str]:
    """Per task kind, a short hash of every setting that changes that kind's rows.

    It is part of each task's key (its file name): rerunning the stage with other settings (other
    methods, metrics, n_samples, chunk size, parameters, seed, ROAR training) plans new keys, written
    beside the tables (:data:`STAGING`) and swapped in only once complete, so a table never mixes two
    settings and the old results stay until their replacements exist.
    Resources, concurrency and retries are not in it: they do not change a single value.
    """
    import hashlib

    def h(d: dict) -> str:
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]

    ev, r = s.evaluation, s.evaluation.roar
    metrics = {"methods": list(ev.methods), "metrics": ev.evaluate_metrics, "n_samples": ev.n_samples,
               "chunk_size": ev.chunk_size, "seed": ev.seed, "method_params": dict(ev.method_params),
               "metric_params": dict(ev.metric_params)}
    if ev.map_methods is not None:  # (absent: the keys of studies from before the option stay the same)
        metrics["map_methods"] = list(ev.map_methods)
    roar = {"epochs": r.epochs, "data_fraction": r.data_fraction, "n_test": r.n_test,
            "replacement": r.replacement, "seed": ev.seed}
    return {"metrics": h(metrics), "roar": h(roar)}


def model_id(row) -> str:
    return f"{row['penalty']}-{row['trial_id']}"


def sample_indices(n_test: int, n_samples: int, seed: int) -> torch.Tensor:
    """The evaluated test images: a seeded subset, the same for every model (paired comparisons)."""
    return seeds.subset(n_test, n_samples, seed)


def plan_tasks(selected: pd.DataFrame, s: StageSettings, n_test: int = 10_000) -> list[Task]:
    """Every task of the stage for ``selected``, in a deterministic order.

    Per dataset, the random-ranking control and the clean retrain (t = 0, nothing removed: the
    clean point of every ROAR curve) run once, ``roar_repeats`` times, filed under the dataset's
    control model (its first ``none`` model, see :func:`_control_model`).
    """
    ev = s.evaluation
    tasks: list[Task] = []
    fp = fingerprints(s)
    n_chunks = math.ceil(min(ev.n_samples, n_test) / ev.chunk_size)
    roar_methods = ev.roar_methods
    for _, row in selected.sort_values(["dataset", "penalty", "trial_id"]).iterrows():
        mid = model_id(row)
        if ev.evaluate_metrics:
            for c in range(n_chunks):
                tasks.append(Task("metrics", row["dataset"], row["penalty"], mid, "all", chunk=c,
                                  settings=fp["metrics"]))
        tasks += _crossmap_tasks(selected, row, ev, n_chunks, fp["metrics"])
        methods = [m for m in roar_methods if m != "random"]
        control = bool(roar_methods) and mid == _control_model(selected, row["dataset"])
        if control:
            methods.append("random")
        for method in methods:
            for t in ev.roar.fractions:
                for r in range(ev.roar.repeats):
                    tasks.append(
                        Task(
                            "roar",
                            row["dataset"],
                            row["penalty"],
                            mid,
                            method,
                            fraction=float(t),
                            repeat=r,
                            settings=fp["roar"],
                        )
                    )
        if control:
            for r in range(ev.roar.repeats):
                tasks.append(
                    Task("roar", row["dataset"], row["penalty"], mid, "", fraction=0.0, repeat=r, settings=fp["roar"])
                )
    return tasks


def _crossmap_tasks(selected: pd.DataFrame, row, ev: Evaluation, n_chunks: int, fp: str) -> list[Task]:
    """The model's chunks scored with each ``map_models`` penalty's maps (not its own, nor its own penalty's)."""
    from evaluation.cross_maps import GROUPS, map_model_for

    if not any(g in ev.evaluate_metrics for g in GROUPS) or not set(ev.methods) - {"random"}:
        return []
    tasks = []
    for penalty in [p for p in ev.map_models if p not in ("own", row["penalty"])]:
        other = map_model_for(selected, row, penalty)
        if other is not None:
            tasks += [Task("crossmap", row["dataset"], row["penalty"], model_id(row), "all", chunk=c, settings=fp,
                           map_model=other) for c in range(n_chunks)]
    return tasks


def _control_model(selected: pd.DataFrame, dataset: str) -> str:
    """The model the dataset's random control and clean retrains are filed under: its first ``none``
    model if the baseline was selected, else its first model."""
    d = selected[selected["dataset"] == dataset].sort_values(["penalty", "trial_id"])
    base = d[d["penalty"] == "none"]
    return model_id((base if len(base) else d).iloc[0])


def describe_plan(tasks: list[Task], s: StageSettings) -> str:
    """What the stage is about to do, with the settings that size it (printed before it starts)."""
    ev = s.evaluation
    n_metric = sum(t.kind == "metrics" for t in tasks)
    roar = [t for t in tasks if t.kind == "roar"]
    models = len({t.model_id for t in tasks})
    ranks = len({(t.model_id if t.method not in ("random", "") else t.dataset, t.method or "random") for t in roar})
    lines = [
        f"[evaluate] plan: {models} model(s); {n_metric} metric chunk(s) ({ev.n_samples} test images per model "
        f"in chunks of {ev.chunk_size}; methods {', '.join(ev.methods)}; "
        f"metrics {', '.join(ev.evaluate_metrics) or 'none'})"
    ]
    cross = [t for t in tasks if t.kind == "crossmap"]
    if cross:
        lines.append(f"[evaluate] plan: {len(cross)} cross-map chunk(s) (MoRF and faithfulness of each model with "
                     f"the maps of the {', '.join(p for p in ev.map_models if p != 'own')} model)")
    if roar:
        n_train = "all" if ev.roar.data_fraction >= 1 else f"{ev.roar.data_fraction:g} of the"
        lines.append(
            f"[evaluate] plan: {ranks} ROAR ranking(s) and {len(roar)} ROAR retrain(s) (fractions "
            f"{', '.join(f'{t:g}' for t in ev.roar.fractions)} + the clean t = 0, {ev.roar.repeats} repeat(s), "
            f"{ev.roar.epochs} epoch(s) on {n_train} training images, "
            f"{ev.roar.n_test or 'all'} test images)"
        )
    return "\n".join(lines)


def stale(tasks: list[Task], out: Path | str) -> list[str]:
    """Files of the stage's tables that no planned task writes: results of other settings or of models
    no longer selected. :func:`run_stage` removes them, so the tables hold exactly the plan."""
    planned = {str(t.path(out)) for t in tasks}
    found = [
        str(storage.join(out, table, rel))
        for table in ("evaluation", "roar")
        for rel in storage.list_files(storage.join(out, table), ".parquet")
    ]
    return sorted(f for f in found if f not in planned)


STAGING = ".staging"  # results of new settings, written here beside the tables until the whole plan is done


def other_settings(out: Path | str, fps: dict[str, str]) -> int:
    """How many files of the ``evaluation``/``roar`` tables carry another settings fingerprint than ``fps``."""
    n = 0
    for table, kind in (("evaluation", "metrics"), ("roar", "roar")):
        for rel in storage.list_files(storage.join(out, table), ".parquet"):
            stem = rel.rsplit("/", 1)[-1][: -len(".parquet")]
            n += "__s" not in stem or stem.rsplit("__s", 1)[1] != fps[kind]
    return n


def swap_in(tasks: list[Task], staging: str, out: str) -> tuple[int, int]:
    """Move the staged files of ``tasks`` (and the gallery of each model whose chunk 0 was staged) into the
    tables, then remove the staging folder; (files moved, unplanned staged result files dropped)."""
    if not storage.exists(staging):
        return 0, 0
    staged = {storage.join(staging, rel) for rel in storage.list_files(staging)}
    keep = {str(t.path(staging)) for t in tasks} & staged
    keep |= {str(gallery_path(t, staging)) for t in tasks if t.kind == "metrics" and t.chunk == 0
             and str(t.path(staging)) in staged}  # a gallery goes with the metrics that wrote it
    moved = dropped = 0
    for src in sorted(staged):
        rel = src[len(staging.rstrip("/")) + 1 :]
        if src in keep:
            storage.move(src, storage.join(out, rel))
            moved += 1
        elif rel.endswith(".parquet") and not rel.startswith("."):
            dropped += 1
    storage.delete(staging)
    return moved, dropped


def missing(tasks: list[Task], out: Path | str) -> list[Task]:
    """The tasks whose file does not exist yet (one listing per table, not one request per task)."""
    have = {
        str(storage.join(out, table, rel))
        for table in {t.table for t in tasks}
        for rel in storage.list_files(storage.join(out, table), ".parquet")
    }
    return [t for t in tasks if str(t.path(out)) not in have]


# --------------------------------------------------------------------------- task bodies
def _node() -> tuple[str, int]:
    import ray

    if not ray.is_initialized():  # called outside Ray (tests, debugging): do not start one
        return "", os.getpid()
    return ray.get_runtime_context().get_node_id(), os.getpid()


def _marker(out: Path | str, task: Task) -> None:
    """Record which process runs ``task`` (``.tasks/<key>.json``): for operators and fault tests."""
    node, pid = _node()
    storage.write_text(
        storage.join(out, ".tasks", f"{task.table}__{task.key}.json"),
        json.dumps({"pid": pid, "node_id": node, "time": time.time()}),
    )


def _threads(cpu: float) -> None:
    torch.set_num_threads(max(1, int(cpu)))


def load_selected_model(row) -> torch.nn.Module:
    from trainables.models import build_model

    model = build_model(row["model"])
    data = storage.read_bytes(row["weights_path"])  # a local path or a URI (s3://…)
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.eval()


def metrics_task(task: Task, row: dict, splits, s: StageSettings, out: str) -> dict:
    """Per-image metrics of one (model, chunk), every method -> one ``evaluation`` file."""
    ev = s.evaluation
    from evaluation.evaluate import evaluate_model
    from foundations.data import to_float

    _threads(s.cpu)
    _marker(out, task)
    t0 = time.perf_counter()
    model = load_selected_model(row)
    dev = torch.device("cuda" if torch.cuda.is_available() and s.gpu > 0 else "cpu")
    model.to(dev)
    idx = sample_indices(len(splits.test_y), ev.n_samples, ev.seed)[
        task.chunk * ev.chunk_size : (task.chunk + 1) * ev.chunk_size
    ]
    x = to_float(splits.test_x[idx]).to(dev)
    y = splits.test_y[idx].to(dev)
    extra = _baselines(ev, splits, dev)  # deeplift_shap's baseline distribution, if that method runs
    # per-chunk seed: independent draws across chunks, identical across models (paired comparisons)
    df = evaluate_model(
        model,
        x,
        y,
        methods=ev.methods,
        metrics=ev.evaluate_metrics,
        n_samples=len(idx),
        seed=seeds.mix(ev.seed, task.chunk),
        dataset=task.dataset,
        penalty=task.penalty,
        model_id=task.model_id,
        method_params=ev.method_params,
        metric_params=ev.metric_params,
        **extra,
    )
    df = df[df["sample"] >= 0].copy()  # per-sample rows; aggregates are for analysis, over all chunks
    with torch.no_grad():  # clean test accuracy, per image (0/1), a model-level row like gaussian_accuracy
        correct = (model(x).argmax(1) == y).double().cpu().numpy()
    acc = pd.DataFrame(
        {
            "dataset": task.dataset,
            "penalty": task.penalty,
            "model_id": task.model_id,
            "method": "",
            "metric": "accuracy",
            "level": float("nan"),
            "sample": range(len(idx)),
            "value": correct,
            "seed": seeds.mix(ev.seed, task.chunk),
        }
    )
    df = pd.concat([acc, df], ignore_index=True)
    df["sample"] = idx.numpy()[df["sample"].to_numpy()]  # chunk position -> test-set index
    if task.chunk == 0:  # the model's accuracy on every test image, once per model
        from evaluation import accuracy

        full = accuracy.rows(model, splits.test_x, splits.test_y, dataset=task.dataset, penalty=task.penalty,
                             model_id=task.model_id, seed=ev.seed)
        df = pd.concat([df, full], ignore_index=True)
    node, _ = _node()
    df["study"], df["chunk"], df["node_id"] = s.study, task.chunk, node
    if task.chunk == 0 and ev.gallery_n > 0:  # before the evaluation file: that one marks the task done
        write_gallery(task, model, x[: ev.gallery_n], y[: ev.gallery_n], idx[: ev.gallery_n], s, out,
                      baselines=extra.get("baselines"))
    results.write_table(df, out, "evaluation", PARTS, task.key, schema=EVALUATION)
    return {"key": task.key, "seconds": time.perf_counter() - t0, "rows": len(df), "node_id": node}


def crossmap_task(task, row: dict, map_row: dict, splits, s, out: str) -> dict:
    """One (model, map model, chunk) -> one ``evaluation`` file with ``map_model`` set (evaluation/cross_maps.py)."""
    from evaluation.cross_maps import GROUPS, SCHEMA, scored_rows
    from foundations.data import to_float

    ev = s.evaluation
    _threads(s.cpu)
    _marker(out, task)
    t0 = time.perf_counter()
    dev = torch.device("cuda" if torch.cuda.is_available() and s.gpu > 0 else "cpu")
    model, maps = load_selected_model(row).to(dev), load_selected_model(map_row).to(dev)
    idx = sample_indices(len(splits.test_y), ev.n_samples, ev.seed)[
        task.chunk * ev.chunk_size : (task.chunk + 1) * ev.chunk_size
    ]
    x, y = to_float(splits.test_x[idx]).to(dev), splits.test_y[idx].to(dev)
    seed = seeds.mix(ev.seed, task.chunk)  # the own rows' per-chunk seed
    df = scored_rows(model, maps, x, y, methods=ev.crossmap_methods, seed=seed, method_params=ev.method_params,
                     metric_params=ev.metric_params, baselines=_baselines(ev, splits, dev).get("baselines"),
                     groups=[g for g in GROUPS if g in ev.evaluate_metrics])
    df["sample"] = idx.numpy()[df["sample"].to_numpy()]
    node, _ = _node()
    df["study"], df["dataset"], df["penalty"], df["model_id"] = s.study, task.dataset, task.penalty, task.model_id
    df["chunk"], df["node_id"], df["map_model"] = task.chunk, node, task.map_model
    results.write_table(df, out, "evaluation", PARTS, task.key, schema=SCHEMA)
    return {"key": task.key, "seconds": time.perf_counter() - t0, "rows": len(df), "node_id": node}


def _baselines(ev: Evaluation, splits, dev: torch.device) -> dict:
    """``deeplift_shap``'s baseline distribution (same for every model and chunk: the evaluation's seed)."""
    from evaluation.captum_methods import extra_inputs

    if "deeplift_shap" not in ev.methods:
        return {}
    extra = extra_inputs("deeplift_shap", splits.train_x, ev.method_params.get("deeplift_shap"), ev.seed)
    return {"baselines": extra["baselines"].to(dev)}


def gallery_path(task: Task, out: Path | str) -> Path | str:
    """The model's ``gallery`` file (one per model, rewritten by every run of its chunk-0 metrics task)."""
    p = storage.join(out, "gallery", f"dataset={task.dataset}", f"penalty={task.penalty}", f"{task.model_id}.parquet")
    return p if storage.is_remote(p) else Path(p)


def write_gallery(
    task: Task,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    samples: torch.Tensor,
    s: StageSettings,
    out: Path | str,
    baselines: torch.Tensor | None = None,
) -> None:
    """The report's saliency gallery for one model: the first ``gallery_n`` evaluated test images, their
    label, the model's prediction and each method's map towards it (seeded as chunk 0's metrics)."""
    ev = s.evaluation
    from evaluation.attributions import attribute

    with torch.no_grad():
        pred = model(x).argmax(1)
    seed = seeds.mix(ev.seed, 0)  # chunk 0's seed: the maps the metrics of these images saw
    image = x.flatten(1).float().cpu().numpy()
    rows = []
    for method in ev.methods:
        extra = {"baselines": baselines} if method == "deeplift_shap" else {}  # metrics_task's distribution
        a = attribute(model, x, pred, method, seed=seed, **ev.method_params.get(method, {}), **extra)
        maps = a.flatten(1).float().cpu().numpy()
        for j in range(len(x)):
            rows.append(
                {
                    "study": s.study,
                    "dataset": task.dataset,
                    "penalty": task.penalty,
                    "model_id": task.model_id,
                    "method": method,
                    "position": j,
                    "sample": int(samples[j]),
                    "label": int(y[j]),
                    "prediction": int(pred[j]),
                    "image": image[j],
                    "map": maps[j],
                    "seed": seed,
                }
            )
    results.write_table(pd.DataFrame(rows, columns=GALLERY.names), out, "gallery", PARTS, task.model_id, schema=GALLERY)


def ranks_task(row: dict | None, splits, method: str, s: StageSettings):
    """Pixel ranks of one (model, method) for every ROAR retrain (kept in the object store)."""
    ev = s.evaluation
    from evaluation.roar import pixel_ranks

    _threads(s.cpu)
    method = method or "random"  # the clean retrain (method "") removes nothing: any ranking will do
    model = load_selected_model(row) if method != "random" else None
    return pixel_ranks(model, splits, method, data_fraction=ev.roar.data_fraction, n_test=ev.roar.n_test, seed=ev.seed)


def roar_task(task: Task, row: dict, splits, ranked, s: StageSettings, out: str) -> dict:
    """One ROAR retrain -> one ``roar`` file."""
    ev = s.evaluation
    from dataclasses import replace

    from evaluation.roar import retrain
    from trainables.train import TrainConfig

    _threads(s.cpu)
    _marker(out, task)
    base = json.loads(storage.read_text(row["config_path"]))["train_config"]  # the study's training settings
    cfg = replace(
        TrainConfig(**base),
        epochs=ev.roar.epochs,
        seed=ev.seed,
        data_root=s.data_root or base["data_root"],
        device="cuda" if (s.gpu > 0 and torch.cuda.is_available()) else "cpu",
    )
    res = retrain(splits, ranked, task.fraction, cfg, repeat=task.repeat, replacement=ev.roar.replacement)
    node, pid = _node()
    df = pd.DataFrame(
        [
            {
                "study": s.study,
                "dataset": task.dataset,
                "penalty": task.penalty,
                "model_id": task.model_id,
                "method": task.method,
                "fraction": task.fraction,
                "repeat": task.repeat,
                "accuracy": res["accuracy"],
                "seconds": res["seconds"],
                "ranks_seconds": ranked.seconds,
                "n_train": res["n_train"],
                "n_test": res["n_test"],
                "replacement": ev.roar.replacement,
                "seed": ev.seed + task.repeat,
                "node_id": node,
                "pid": pid,
            }
        ]
    )
    results.write_table(df, out, "roar", PARTS, task.key, schema=ROAR)
    return {"key": task.key, "seconds": res["seconds"], "rows": 1, "node_id": node}


# --------------------------------------------------------------------------- the driver
def _progress(log: Callable[[str], None], done: int, total: int, t0: float, every: float, last: list[float]) -> None:
    now = time.perf_counter()
    if done < total and now - last[0] < every:
        return
    last[0] = now
    el = now - t0
    eta = el / done * (total - done) if done else float("nan")
    log(f"[evaluate] {done}/{total} tasks done, {el:.0f} s elapsed, ETA {eta:.0f} s")


class Runner:
    """Submits evaluation tasks to the connected Ray cluster as they become known, at most
    ``max_in_flight`` at once, and collects them. :func:`run_stage` adds every task at once; the
    study's concurrent schedule (study/schedule.py) adds a model's tasks as soon as the model is
    selected, while searches still run, and polls it in the same loop as the searches.
    """

    def __init__(
        self, s: StageSettings, out: str | Path, log: Callable[[str], None] = print, progress_every: float = 10.0
    ) -> None:
        import ray

        self.s, self.out, self.log, self.progress_every = s, storage.normalize(out), log, progress_every
        # results of other settings in the tables: this run's files go beside them until the plan is complete
        self.staging = storage.join(self.out, STAGING)
        self.write_to = self.staging if other_settings(self.out, fingerprints(s)) else self.out
        opts = dict(num_cpus=s.cpu, num_gpus=s.gpu, max_retries=s.max_retries)
        self._metrics = ray.remote(metrics_task).options(**opts)
        self._roar = ray.remote(roar_task).options(**opts)
        self._ranks = ray.remote(ranks_task).options(**opts)
        self._cross = ray.remote(crossmap_task).options(**opts)
        if s.simulate:  # --simulate: the same task graph, torch-free bodies that sleep
            self._metrics, self._roar, self._ranks = (
                ray.remote(f).options(**opts) for f in (simulated.metrics_task, simulated.roar_task,
                                                        simulated.ranks_task))
        self.max_in_flight = s.max_in_flight or max(
            1, int(2 * ray.cluster_resources().get("CPU", 1) / max(s.cpu, 1e-3))
        )
        self._splits: dict[str, object] = {}
        self.n_test: dict[str, int] = {}
        self.rows: dict[str, dict] = {}
        self._ranks_refs: dict[tuple[str, str], object] = {}
        self.pending: dict = {}
        self.queue: list[Task] = []
        self.stats = {"total": 0, "submitted": 0, "task_seconds": 0.0, "nodes": {}, "done": 0, "first_start": None}
        self.t0, self._last = time.perf_counter(), [0.0]

    def splits(self, dataset: str):
        """The dataset's full splits (the test set included) in the object store, put once."""
        import ray

        from foundations import data as data_mod

        if dataset not in self._splits:
            sp = data_mod.load(dataset, self.s.data_root or None)
            self._splits[dataset], self.n_test[dataset] = ray.put(sp), len(sp.test_y)
        return self._splits[dataset]

    def tasks_for(self, selected: pd.DataFrame, model_ids: set[str] | None = None) -> list[Task]:
        """The plan of ``selected`` (per dataset), restricted to ``model_ids`` when given."""
        tasks = []
        for ds in sorted(selected["dataset"].unique()):
            self.splits(ds)
            tasks += plan_tasks(selected[selected["dataset"] == ds], self.s, self.n_test[ds])
        return [t for t in tasks if model_ids is None or t.model_id in model_ids or t.map_model in model_ids]

    def add(self, selected: pd.DataFrame, tasks: list[Task]) -> int:
        """Queue the tasks whose file is missing (rows of ``selected`` describe their models)."""
        # model files resolved in this study folder (relative paths; an old absolute one only if in this folder)
        self.rows.update({model_id(r): model_paths.resolve_row(self.out, r.to_dict()) for _, r in selected.iterrows()})
        todo = missing(missing(tasks, self.out), self.staging)  # done in the tables, or staged by an earlier run
        listed = set(todo)
        todo += self._unreadable([t for t in tasks if t not in listed])  # a torn file is not a finished task
        queued = getattr(self, "_queued", set())  # a cross-map task can be planned twice (either model's turn)
        todo = [t for t in todo if t.key not in queued]
        self._queued = queued | {t.key for t in todo}
        self.stats["total"] += len(tasks)
        self.stats["submitted"] += len(todo)
        self.queue += todo
        return len(todo)

    def _unreadable(self, done: list[Task]) -> list[Task]:
        """The tasks whose existing file cannot be read (a truncated write): computed again, each said once."""
        redo = []
        for t in done:
            f = next((str(t.path(r)) for r in (self.out, self.staging) if storage.exists(str(t.path(r)))), "")
            why = f and results.file_problem(f, t.table, STAGE_SCHEMAS[t.table], PARTS)
            if why:
                self.log(f"[evaluate] {f}: {why}; computing it again")
                redo.append(t)
        return redo

    def _submit(self) -> None:
        s, out = self.s, str(self.write_to)
        while self.queue and len(self.pending) < self.max_in_flight:
            task = self.queue.pop(0)
            row, ref_splits = self.rows[task.model_id], self.splits(task.dataset)
            if s.simulate:
                ref = self._submit_simulated(task)
            elif task.kind == "metrics":
                ref = self._metrics.remote(task, row, ref_splits, s, out)
            elif task.kind == "crossmap":
                ref = self._cross.remote(task, row, self.rows[task.map_model], ref_splits, s, out)
            else:
                # the random control and the clean retrain (method "": nothing removed) share the random ranks
                method = task.method or "random"
                rk = (task.model_id if method != "random" else task.dataset, method)
                if rk not in self._ranks_refs:
                    self._ranks_refs[rk] = self._ranks.remote(row, ref_splits, method, s)
                ref = self._roar.remote(task, row, ref_splits, self._ranks_refs[rk], s, out)
            if self.stats["first_start"] is None:
                self.stats["first_start"] = time.time()
            self.pending[ref] = task

    def _submit_simulated(self, task: Task):
        """Submit the simulated body of ``task`` (a plain spec: the workers import no torch)."""
        sp, out = simulated.spec(task, self.s, self.n_test[task.dataset]), str(self.out)
        if task.kind == "metrics":
            return self._metrics.remote(sp, out)
        rk = (task.model_id if task.method not in ("random", "") else task.dataset, task.method or "random")
        if rk not in self._ranks_refs:
            self._ranks_refs[rk] = self._ranks.remote(sp)
        return self._roar.remote(sp, self._ranks_refs[rk], out)

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.pending)

    def refs(self) -> list:
        """Submit what fits, then the references of the running tasks (to ``ray.wait`` on)."""
        self._submit()
        return list(self.pending)

    def complete(self, ref) -> dict:
        """Collect one finished task (raises its error)."""
        import ray

        self.pending.pop(ref)
        info = ray.get(ref)
        st = self.stats
        st["done"] += 1
        st["task_seconds"] += info["seconds"]
        st["nodes"][info["node_id"]] = st["nodes"].get(info["node_id"], 0) + 1
        _progress(self.log, st["done"], st["submitted"], self.t0, self.progress_every, self._last)
        return info

    def finish(self, selected: pd.DataFrame, remove_stale: bool = True) -> dict:
        """After the last task, once every planned file exists: remove files no planned task writes (other
        settings, models no longer selected), move the staged new ones in, derive the curves table."""
        planned = self.tasks_for(selected) if len(selected) else []
        left = missing(missing(planned, self.out), self.staging)
        if left:  # never swap in an incomplete set: the old results stay
            raise RuntimeError(f"{len(left)} planned evaluation task(s) have no result file; rerun to compute them")
        old = stale(planned, self.out) if remove_stale else []
        if old:
            self.log(
                f"[evaluate] removing {len(old)} result file(s) of other evaluation settings or of models no "
                f"longer selected (the tables then hold only this plan's results)"
            )
            for f in old:
                storage.delete(f)
        moved, dropped = swap_in(planned, self.staging, self.out)
        if moved:
            self.log(f"[evaluate] {moved} new result file(s) of these settings moved into the tables")
        if dropped:
            self.log(f"[evaluate] {dropped} unfinished result file(s) of other settings dropped from {self.staging}")
        self.stats["wall_seconds"] = time.perf_counter() - self.t0
        write_curves(self.out, self.s.study)
        return self.stats


def run_stage(
    selected: pd.DataFrame,
    s: StageSettings,
    out: str | Path,
    log: Callable[[str], None] = print,
    progress_every: float = 10.0,
) -> dict:
    """Run every missing task of the stage on the connected Ray cluster; return counts and timings."""
    import ray

    out = storage.normalize(out)  # an absolute path, or a URI
    if selected.empty:
        log("[evaluate] no selected models: nothing to evaluate")
        return {"total": 0, "submitted": 0}
    runner = Runner(s, out, log, progress_every)
    all_tasks = runner.tasks_for(selected)
    if runner.write_to != runner.out:
        log(f"[evaluate] the tables hold results of other settings: they stay until this plan's results are "
            f"complete (written to {runner.write_to} meanwhile)")
    todo = runner.add(selected, all_tasks)
    log(describe_plan(all_tasks, s))
    log(f"[evaluate] {len(all_tasks)} tasks, {len(all_tasks) - todo} already done, {todo} to run")
    runner.t0 = time.perf_counter()
    while runner.busy:
        ready, _ = ray.wait(runner.refs(), num_returns=1)
        for ref in ready:
            runner.complete(ref)
    return runner.finish(selected)  # the old results go only now, once their replacements exist


def run_for_study(cfg, selected: pd.DataFrame, log: Callable[[str], None] = print) -> dict:
    """Entry point from ``study.launch``: the stage on the study's selected models."""
    s = settings_from_config(cfg)
    stats = run_stage(selected, s, cfg.location, log=log)  # a path or a URI
    if stats.get("submitted"):
        eff = stats["task_seconds"] / max(stats["wall_seconds"], 1e-9)
        log(
            f"[evaluate] {stats['submitted']} tasks in {stats['wall_seconds']:.0f} s "
            f"(task time {stats['task_seconds']:.0f} s, {eff:.2f} task-seconds per second) on "
            f"{len(stats['nodes'])} node(s)"
        )
    return stats
