"""Parquet tables of the study: explicit schemas, Hive-partitioned, written atomically, rerun-safe.

Layout (under the study folder)::

    trials/dataset=mnist/penalty=gradient/<key>.parquet     one row per trial
    epochs/dataset=mnist/penalty=gradient/<key>.parquet     one row per reported epoch
    selected/dataset=mnist/<key>.parquet                    the chosen model per (dataset, penalty)
    evaluation/dataset=mnist/penalty=gradient/<task>.parquet per-image metrics (evaluation stage)
    roar/dataset=mnist/penalty=gradient/<task>.parquet       one ROAR retrain per file
    curves/dataset=mnist/penalty=gradient/curves.parquet     MoRF, ROAR, Gaussian and block curves
    gallery/dataset=mnist/penalty=gradient/<model>.parquet   a few test images and their maps (the report's gallery)

Each writer writes one file per partition with a deterministic name (``<key>.parquet``), first
under a temporary name, then renamed: rerunning a writer replaces its files, never adds rows.
Read back with ``pandas.read_parquet(study_dir / "trials")`` or :func:`read_table` (which restores
the column order and the partition columns as plain strings)::

    from foundations.schemas import read_table
    trials = read_table("outputs/quick", "trials")
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from foundations import storage

_TS = pa.timestamp("us", tz="UTC")
PENALTY_VALUE_NAMES = ("gradient", "consistency", "smoothness", "locality", "fidelity", "symmetry")  # SPEC §4

TRIALS = pa.schema(
    [
        ("study", pa.string()),
        ("dataset", pa.string()),
        ("penalty", pa.string()),
        ("trial_id", pa.string()),
        ("status", pa.string()),  # ok | stopped (early, by the scheduler) | error
        ("error", pa.string()),  # the failure reason ('' when none)
        ("model", pa.string()),
        ("lam", pa.float64()),
        ("lr", pa.float64()),
        ("seed", pa.int64()),
        ("optimizer", pa.string()),
        ("batch_size", pa.int64()),
        ("epochs", pa.int64()),
        ("data_fraction", pa.float64()),
        ("val_fraction", pa.float64()),
        ("val_limit", pa.int64()),
        ("split_seed", pa.int64()),
        ("explain_n", pa.int64()),
        ("penalty_params", pa.string()),  # JSON
        ("train_config", pa.string()),  # JSON of the full TrainConfig
        ("sampler_seed", pa.int64()),
        ("epochs_done", pa.int64()),
        ("val_acc", pa.float64()),  # final (last finished epoch)
        ("val_morf", pa.float64()),
        ("train_loss", pa.float64()),
        ("ce", pa.float64()),
        ("penalty_value", pa.float64()),
        ("best_val_acc", pa.float64()),
        ("best_val_morf", pa.float64()),
        ("train_seconds", pa.float64()),  # sum over epochs, training only
        ("on_pareto_front", pa.bool_()),  # of (val_acc, val_morf) within its (dataset, penalty)
        ("checkpoint_path", pa.string()),  # absolute, the trial's latest checkpoint
        ("node_id", pa.string()),
        ("hostname", pa.string()),
        ("pid", pa.int64()),
        ("start_time", _TS),
        ("end_time", _TS),
        ("git_commit", pa.string()),
        ("versions", pa.string()),  # JSON: python, torch, ray, optuna, ...
    ]
)

EPOCHS = pa.schema(
    [
        ("study", pa.string()),
        ("dataset", pa.string()),
        ("penalty", pa.string()),
        ("trial_id", pa.string()),
        ("epoch", pa.int64()),
        ("train_loss", pa.float64()),
        ("ce", pa.float64()),
        ("penalty_value", pa.float64()),
        ("val_acc", pa.float64()),
        ("val_morf", pa.float64()),
        ("train_seconds", pa.float64()),
        ("samples_per_s", pa.float64()),
        ("morf_seconds", pa.float64()),
        ("seconds", pa.float64()),
        ("end_time", _TS),
        ("node_id", pa.string()),
        ("pid", pa.int64()),
    ]
    # every penalty's value on the fixed validation batch (trainables/penalty_values.py), whatever was trained
    + [(f"val_{p}", pa.float64()) for p in PENALTY_VALUE_NAMES]
)

SELECTED = pa.schema(
    [
        ("study", pa.string()),
        ("dataset", pa.string()),
        ("penalty", pa.string()),
        ("trial_id", pa.string()),
        ("model", pa.string()),
        ("lam", pa.float64()),
        ("lr", pa.float64()),
        ("seed", pa.int64()),
        ("val_acc", pa.float64()),
        ("val_morf", pa.float64()),
        ("baseline_val_acc", pa.float64()),  # best `none` trial of the dataset (NaN if none ran)
        ("tolerance", pa.float64()),
        ("within_tolerance", pa.bool_()),  # False: no trial was within tolerance, best accuracy taken
        ("has_baseline", pa.bool_()),  # False: the dataset has no finished `none` trial, tolerance not checked
        ("on_pareto_front", pa.bool_()),  # within its (dataset, penalty) search
        ("on_dataset_pareto_front", pa.bool_()),  # over all penalties of the dataset
        ("n_trials", pa.int64()),
        ("n_failed", pa.int64()),
        ("weights_path", pa.string()),  # relative to the study folder (a URI: absolute), state_dict .pt
        ("config_path", pa.string()),  # relative like weights_path, JSON (TrainConfig + trial + study)
        ("git_commit", pa.string()),
    ]
)

# ---- the evaluation stage's tables (evaluation/stage.py writes them, one file per task)
EVALUATION = pa.schema(
    [
        ("study", pa.string()),
        ("dataset", pa.string()),
        ("penalty", pa.string()),
        ("model_id", pa.string()),  # <penalty>-<trial_id>; "random" rows of ROAR use the dataset's `none` model
        ("method", pa.string()),  # attribution method ('' for rows about the model: accuracy, gaussian/block accuracy)
        (
            "metric",
            pa.string(),
        ),  # morf, morf_curve, complexity, gaussian_accuracy, accuracy ... (evaluation/evaluate.py)
        ("level", pa.float64()),  # curve position (fraction removed, σ, s_max); NaN for scalar metrics
        ("sample", pa.int64()),  # test-set index of the image (-1: aggregate row)
        ("value", pa.float64()),
        ("seed", pa.int64()),
        ("chunk", pa.int64()),  # the task (chunk of the test sample) that wrote the row
        ("node_id", pa.string()),  # the Ray node that ran it
    ]
)

ROAR = pa.schema(
    [
        ("study", pa.string()),
        ("dataset", pa.string()),
        ("penalty", pa.string()),
        ("model_id", pa.string()),
        ("method", pa.string()),  # attribution method whose ranking was removed, or "random" (the control)
        ("fraction", pa.float64()),  # t: share of each image's pixels replaced
        ("repeat", pa.int64()),
        ("accuracy", pa.float64()),  # of the retrained model on the modified test images
        ("seconds", pa.float64()),  # the retrain (removal + training + test)
        ("ranks_seconds", pa.float64()),  # the (model, method) ranking, computed once and shared
        ("n_train", pa.int64()),
        ("n_test", pa.int64()),
        ("replacement", pa.string()),  # mean | zero
        ("seed", pa.int64()),
        ("node_id", pa.string()),
        ("pid", pa.int64()),
    ]
)

CURVES = pa.schema(
    [
        ("study", pa.string()),
        ("dataset", pa.string()),
        ("penalty", pa.string()),
        ("model_id", pa.string()),
        ("method", pa.string()),
        ("curve", pa.string()),  # morf_curve | gaussian_accuracy | block_accuracy | max_sensitivity | roar ...
        ("x", pa.float64()),
        ("y", pa.float64()),  # mean over samples (ROAR: over repeats)
        ("y_std", pa.float64()),
        ("n", pa.int64()),
    ]
)

# A few evaluated test images per model, with each method's map: what the report's saliency gallery shows
# (written by the metrics task of chunk 0, evaluation/stage.py; the report needs no weights, data or torch).
GALLERY = pa.schema(
    [
        ("study", pa.string()),
        ("dataset", pa.string()),
        ("penalty", pa.string()),
        ("model_id", pa.string()),
        ("method", pa.string()),  # attribution method of `map`
        ("position", pa.int64()),  # 0..gallery_n-1: the image's place in the gallery
        ("sample", pa.int64()),  # test-set index of the image (the first evaluated ones)
        ("label", pa.int64()),  # true class
        ("prediction", pa.int64()),  # the model's class: the one the map explains
        ("image", pa.list_(pa.float32())),  # the image, 28 x 28 = 784 values in [0, 1], row-major
        ("map", pa.list_(pa.float32())),  # the method's attribution map, 784 values, row-major
        ("seed", pa.int64()),
    ]
)

SEARCH_TABLES = ("trials", "epochs", "selected")  # written by study/search.py
EVALUATION_TABLES = ("evaluation", "roar", "curves")  # written by evaluation/stage.py
SCHEMAS: dict[str, pa.Schema] = {
    "trials": TRIALS,
    "epochs": EPOCHS,
    "selected": SELECTED,
    "evaluation": EVALUATION,
    "roar": ROAR,
    "curves": CURVES,
    "gallery": GALLERY,
}
PARTITIONS: dict[str, list[str]] = {
    "trials": ["dataset", "penalty"],
    "epochs": ["dataset", "penalty"],
    "selected": ["dataset"],
    "evaluation": ["dataset", "penalty"],
    "roar": ["dataset", "penalty"],
    "curves": ["dataset", "penalty"],
    "gallery": ["dataset", "penalty"],
}


def _safe(v) -> str:
    s = str(v)
    if not s or not re.fullmatch(r"[A-Za-z0-9_.\-]+", s):
        raise ValueError(f"partition value {s!r} must match [A-Za-z0-9_.-]+")
    return s


def to_arrow(data: pd.DataFrame | pa.Table, schema: pa.Schema) -> pa.Table:
    """Conform ``data`` to ``schema``: exactly its columns, in order, cast to its types."""
    if isinstance(data, pa.Table):
        data = data.to_pandas()
    missing = [n for n in schema.names if n not in data.columns]
    extra = [c for c in data.columns if c not in schema.names]
    if missing or extra:
        raise ValueError(f"columns do not match the schema: missing {missing}, unexpected {extra}")
    data = data[schema.names].copy()
    for f in schema:
        if pa.types.is_timestamp(f.type):  # nanoseconds -> the schema's microseconds
            data[f.name] = pd.to_datetime(data[f.name], utc=True).dt.floor("us")
    return pa.Table.from_pandas(data, schema=schema, preserve_index=False)


def write_table(
    data: pd.DataFrame | pa.Table,
    root: str | Path,
    table: str,
    partition_cols: list[str] | None = None,
    key: str = "part-0",
    schema: pa.Schema | None = None,
) -> list[Path]:
    """Write ``data`` as ``root/table/<col>=<value>/.../<key>.parquet``, one file per partition.

    Args:
        data: rows (a DataFrame or an Arrow table).
        root: the study folder.
        table: table name; its schema is ``SCHEMAS[table]`` unless ``schema`` is given.
        partition_cols: Hive partition columns (default ``PARTITIONS[table]``, else none).
        key: the writer's file name stem; the same key rewrites the same files (no duplicates).
        schema: explicit schema for tables not in :data:`SCHEMAS` (e.g. the evaluation stage's).

    Returns the written paths. Each file is written under a temporary name and renamed.
    """
    schema = schema or SCHEMAS[table]
    parts = list(PARTITIONS.get(table, []) if partition_cols is None else partition_cols)
    _safe(key)
    t = to_arrow(data, schema)
    file_schema = pa.schema([f for f in schema if f.name not in parts])
    df = t.to_pandas()
    groups = [((), df)] if not parts else df.groupby(parts, sort=True, dropna=False)
    written = []
    for values, g in groups:
        values = values if isinstance(values, tuple) else (values,)
        parts_path = [f"{col}={_safe(v)}" for col, v in zip(parts, values)]
        loc = storage.join(storage.normalize(root), table, *parts_path, f"{key}.parquet")
        storage.write_parquet(pa.Table.from_pandas(g[file_schema.names], schema=file_schema, preserve_index=False), loc)
        written.append(Path(loc) if not storage.is_remote(loc) else loc)
    return written


def dataset(
    root: str | Path, table: str, schema: pa.Schema | None = None, partition_cols: list[str] | None = None
) -> ds.Dataset:
    """A ``pyarrow.dataset`` over ``root/table`` (a folder or a URI), Hive partition columns typed as strings."""
    schema = schema or SCHEMAS[table]
    parts = list(PARTITIONS.get(table, []) if partition_cols is None else partition_cols)
    part = ds.partitioning(pa.schema([(p, pa.string()) for p in parts]), flavor="hive") if parts else None
    fs, path = storage.filesystem(storage.join(storage.normalize(root), table))
    return ds.dataset(
        path,
        filesystem=fs,
        format="parquet",
        partitioning=part,
        schema=schema,
        exclude_invalid_files=False,
        ignore_prefixes=[".", "_"],
    )


def read_table(
    root: str | Path, table: str, schema: pa.Schema | None = None, partition_cols: list[str] | None = None
) -> pd.DataFrame:
    """All rows of ``root/table`` (a folder or a URI) as a DataFrame in schema column order (empty if none yet)."""
    schema = schema or SCHEMAS[table]
    if not storage.exists(storage.join(storage.normalize(root), table)):
        return schema.empty_table().to_pandas()
    return dataset(root, table, schema, partition_cols).to_table().to_pandas()


def file_problem(loc, table: str, schema: pa.Schema | None = None, partition_cols: list[str] | None = None) -> str:
    """Why the result file ``loc`` of ``table`` cannot be used ('' if it can): its Parquet footer is
    unreadable (a truncated or torn file), or it lacks columns of the table's schema."""
    import pyarrow.parquet as pq

    schema = schema or SCHEMAS[table]
    parts = set(PARTITIONS.get(table, []) if partition_cols is None else partition_cols)
    fs, path = storage.filesystem(loc)
    try:
        names = pq.read_schema(path, filesystem=fs).names
    except (pa.ArrowException, OSError) as exc:
        return f"not a readable Parquet file: {' '.join(str(exc).split())[:200]}"
    lacking = [n for n in schema.names if n not in parts and n not in names]
    return f"lacks the column(s) {lacking}" if lacking else ""


def table_problems(root: str | Path, table: str, **kw) -> list[tuple[str, str]]:
    """(file, problem) for every unusable file of ``root/table`` (see :func:`file_problem`)."""
    base = storage.join(storage.normalize(root), table)
    files = [storage.join(base, rel) for rel in storage.list_files(base, ".parquet")
             if not any(p.startswith((".", "_")) for p in rel.split("/"))]
    return [(f, why) for f in files if (why := file_problem(f, table, **kw))]


# --------------------------------------------------------------------------- provenance
def git_commit(repo: Path | None = None) -> str:
    """HEAD commit of the repository (``+dirty`` if modified), or '' without git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


RESULT_PACKAGES = ("torch", "torchvision", "ray", "optuna", "numpy", "pandas", "pyarrow", "captum")


def package_versions(names: tuple[str, ...] = RESULT_PACKAGES) -> dict:
    """Versions of Python and of ``names`` ('' for a package that is not installed): provenance of results."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


# Columns added to a schema after studies were written with it: reading an older table fills them with
# nulls instead of refusing it (study.analysis).
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"selected": ("has_baseline",),
                                             "epochs": tuple(f"val_{p}" for p in PENALTY_VALUE_NAMES)}
