"""A study folder as typed tables: the schemas the analysis needs and the Parquet reader that checks
them (pandas out). The views and statistics on top: :mod:`study.analysis` (``analysis.load`` is the
entry point users call; it re-exports the names here).

Tables are read file by file (Hive partition folders ``key=value`` become columns) and checked
against their schema: a required column missing, or a column of an incompatible type, is a
:class:`SchemaError` naming the file and the column. A folder holding none of the study's tables
(and no ``config.yaml``) is a :class:`NotAStudyError`. Tables not written yet are empty
DataFrames with the right columns and are listed as missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from foundations import schemas as R

# --------------------------------------------------------------------------- schemas
SEARCH_TABLES = R.SEARCH_TABLES
EVALUATION_TABLES = R.EVALUATION_TABLES
TABLES = SEARCH_TABLES + EVALUATION_TABLES
# Read when present, never listed as missing: the report's saliency gallery (foundations.schemas.GALLERY).
AUXILIARY_TABLES = ("gallery",)

# The columns the analysis needs of the evaluation stage's tables: a subset of their full schemas
# in foundations/schemas.py (the stage's extra columns, chunk, node_id, y_std ..., are kept when present).
def _columns(schema: pa.Schema, names: Sequence[str]) -> pa.Schema:
    return pa.schema([schema.field(n) for n in names])


_KEY = ("study", "dataset", "penalty", "model_id", "method")
EVALUATION = _columns(R.EVALUATION, (*_KEY, "metric", "level", "sample", "value", "seed"))
ROAR = _columns(R.ROAR, (*_KEY, "fraction", "repeat", "accuracy", "seconds", "node_id"))
CURVES = _columns(R.CURVES, (*_KEY, "curve", "x", "y"))
_FALLBACK_SCHEMAS = {"evaluation": EVALUATION, "roar": ROAR, "curves": CURVES}
EVALUATION_PARTITIONS = ["dataset", "penalty"]


class StudyError(ValueError):
    """A study folder or one of its tables cannot be read; the message names the path."""


class NotAStudyError(StudyError):
    """The folder holds none of a study's tables (nor its ``config.yaml``)."""


class SchemaError(StudyError):
    """A table's file lacks a required column or holds one of an incompatible type."""


def table_schema(table: str) -> pa.Schema:
    """The columns ``table`` must have: the search tables' full schemas (``foundations.schemas``); for the
    evaluation tables the documented columns above (the stage's full schemas in ``foundations.schemas``
    add ``chunk``, ``node_id``, ``y_std`` …, which are kept when present)."""
    if table not in TABLES + AUXILIARY_TABLES:
        raise ValueError(f"unknown table {table!r}; valid: {', '.join(TABLES + AUXILIARY_TABLES)}")
    if table in _FALLBACK_SCHEMAS:
        return _FALLBACK_SCHEMAS[table]
    return R.SCHEMAS[table]


# --------------------------------------------------------------------------- reading
def _filesystem(path_or_uri) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, display name) of a local path or a URI (``file://``, ``s3://``...)."""
    s = str(path_or_uri)
    if "://" in s:
        from foundations import storage  # the study's own storage rules (S3 endpoint override, schemes)

        try:
            fs, path = storage.filesystem(s)
        except (storage.StorageError, pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise StudyError(f"{s}: cannot open this URI ({exc})") from None
        return fs, path.rstrip("/") or "/", s
    p = Path(s).expanduser().absolute()
    return pafs.LocalFileSystem(), str(p), str(p)


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual == expected or pa.types.is_null(actual):
        return True
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if pa.types.is_string(expected) or pa.types.is_large_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(actual) or pa.types.is_integer(actual)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual)
    if pa.types.is_boolean(expected):
        return pa.types.is_boolean(actual)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual)
    return False


def _hive_values(rel: str) -> dict[str, str]:
    out = {}
    for part in rel.split("/")[:-1]:
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def conform(t: pa.Table, schema: pa.Schema, where: str, partition: dict[str, str]) -> pa.Table:
    """``t`` with the partition columns added, checked and cast to ``schema`` (extra columns kept)."""
    for k, v in partition.items():
        if k in t.column_names:
            continue
        t = t.append_column(k, pa.array([v] * t.num_rows, pa.string()))
    for name in {n for cols in R.ADDED_COLUMNS.values() for n in cols}:  # newer columns: null in older tables
        if name in schema.names and name not in t.column_names:
            t = t.append_column(name, pa.nulls(t.num_rows, schema.field(name).type))
    missing = [n for n in schema.names if n not in t.column_names]
    if missing:
        raise SchemaError(f"{where}: missing required column(s) {missing}; expected the columns {schema.names}")
    cols, names = [], []
    for f in schema:
        col = t.column(f.name)
        if f.name in partition and pa.types.is_string(col.type) and not pa.types.is_string(f.type):
            try:
                col = pc.cast(col, f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise SchemaError(
                    f"{where}: partition value {f.name}={partition[f.name]!r} is not a valid {f.type}"
                ) from None
        elif not _compatible(col.type, f.type):
            raise SchemaError(f"{where}: column {f.name!r} has type {col.type}, expected {f.type}")
        if col.type != f.type:
            col = pc.cast(col, f.type, safe=False) if pa.types.is_timestamp(f.type) else pc.cast(col, f.type)
        cols.append(col)
        names.append(f.name)
    for extra in t.column_names:
        if extra not in names:
            cols.append(t.column(extra))
            names.append(extra)
    return pa.Table.from_arrays(cols, names=names)


def read_study_table(path_or_uri, table: str, _opened: tuple | None = None) -> tuple[pd.DataFrame, bool]:
    """(rows of ``<study>/<table>``, present). Files whose name starts with ``.`` or ``_``
    (temporary files of a writer) are skipped. Raises :class:`SchemaError` naming the file.
    ``_opened``: the study's already opened ``_filesystem`` (read_study opens it once for every table)."""
    schema = table_schema(table)
    fs, root, shown = _opened or _filesystem(path_or_uri)
    folder = f"{root.rstrip('/')}/{table}"
    info = fs.get_file_info(folder)
    if info.type == pafs.FileType.NotFound:
        return schema.empty_table().to_pandas(), False
    if info.type != pafs.FileType.Directory:
        raise SchemaError(f"{shown}/{table}: expected a folder of Parquet files, found a file")
    files = [
        f
        for f in fs.get_file_info(pafs.FileSelector(folder, recursive=True))
        if f.type == pafs.FileType.File
        and f.path.endswith(".parquet")
        and not any(p.startswith((".", "_")) for p in f.path[len(folder) + 1 :].split("/"))
    ]
    parts = []
    for f in sorted(files, key=lambda f: f.path):
        rel = f.path[len(folder) + 1 :]
        where = f"{shown}/{table}/{rel}"
        try:
            t = pq.read_table(f.path, filesystem=fs)
        except (pa.ArrowException, OSError) as exc:
            raise SchemaError(f"{where}: not a readable Parquet file ({exc})") from None
        parts.append(conform(t, schema, where, _hive_values(rel)))
    if not parts:
        return schema.empty_table().to_pandas(), False
    try:
        t = pa.concat_tables(parts, promote_options="permissive")
    except pa.ArrowException as exc:
        raise SchemaError(f"{shown}/{table}: files disagree on extra columns ({exc})") from None
    return t.to_pandas(), t.num_rows > 0


def split_cross_maps(evaluation: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows scored with the model's own maps, rows scored with another model's maps): the latter name that
    model in ``map_model`` (``evaluation.map_models``, evaluation/cross_maps.py); older studies have none."""
    if "map_model" not in evaluation.columns:
        return evaluation, evaluation.iloc[0:0].assign(map_model=pd.Series(dtype=object))
    cross = evaluation["map_model"].fillna("").astype(str) != ""
    own = evaluation[~cross].drop(columns="map_model").reset_index(drop=True)
    return own, evaluation[cross].reset_index(drop=True)


def read_study(path_or_uri) -> dict:
    """Every table of a study folder (a local path or a URI pyarrow understands), as the keyword
    arguments of ``study.analysis.Study``: ``path``, ``missing``, ``config``, ``config_text`` and one
    DataFrame per table.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotAStudyError: it exists but holds no study table and no ``config.yaml``.
        SchemaError: a table's file lacks a column or holds one of the wrong type (names the file).
    """
    opened = fs, root, shown = _filesystem(path_or_uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{shown}: no such study folder")
    if info.type != pafs.FileType.Directory:
        raise NotAStudyError(
            f"{shown}: not a study folder (it is a file); pass the folder the study writes its tables to"
        )
    present = {t for t in TABLES if fs.get_file_info(f"{root.rstrip('/')}/{t}").type == pafs.FileType.Directory}
    cfg_path = f"{root.rstrip('/')}/config.yaml"
    has_cfg = fs.get_file_info(cfg_path).type == pafs.FileType.File
    if not present and not has_cfg:
        raise NotAStudyError(
            f"{shown}: not a study folder: none of the tables {', '.join(t + '/' for t in TABLES)} "
            "nor config.yaml is there (point to the study's output folder, e.g. outputs/quick)"
        )
    frames, missing = {}, []
    for t in TABLES:
        df, ok = read_study_table(path_or_uri, t, opened)
        frames[t] = df
        if not ok:
            missing.append(t)
    frames["gallery"], _ = read_study_table(path_or_uri, "gallery", opened)
    frames["evaluation"], frames["cross_maps"] = split_cross_maps(frames["evaluation"])
    config, text = {}, ""
    if has_cfg:
        from study.config import ConfigError, migrate, parse_mapping

        with fs.open_input_stream(cfg_path) as f:
            text = f.read().decode("utf-8", "replace")
        try:
            config = migrate(parse_mapping(text, f"{shown}/config.yaml"))  # sections, whatever its version
        except ConfigError as exc:
            raise StudyError(str(exc)) from None
    return dict(path=shown, missing=missing, config=config, config_text=text, **frames)


def check_search_tables(location) -> None:
    """Before a launch runs: raise :class:`StudyError` (one line) for the first unusable file of the
    search tables (trials, epochs, selected), naming it and how to get it back."""
    from foundations import storage

    for table in ("trials", "epochs", "selected"):
        for f, why in R.table_problems(location, table):
            if table == "selected":
                todo = "delete it, then rerun with --resume --stage search (the models are selected again from trials)"
            else:
                hive = _hive_values(f[len(storage.join(storage.normalize(location), table)) + 1 :])
                exp = f"{hive.get('dataset')}-{hive.get('penalty')}"
                done = storage.join(location, "tune", exp, "search_done.json")
                todo = (f"delete it and {done}, then rerun with --resume (the search's tables are written again "
                        f"from its saved Tune results)")
            raise StudyError(f"{table}: {f}: {why}; valid choices: {todo}, or restore the file from a copy")
