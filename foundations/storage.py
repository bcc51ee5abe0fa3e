"""Shared storage of a study: one location every node of the cluster reaches.

A *location* is a string: an absolute local path (``/shared/studies/quick``; a ``file://`` URI
is turned into one) or a URI of an object store that pyarrow reaches
(``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hdfs://…``). Everything the study writes
(Tune's experiment folders with the trial checkpoints, every Parquet table, the exported
models, ``config.yaml``) goes through the helpers below, so the same code writes to a local
folder on a laptop and to S3 on a cluster::

    fs, path = storage.filesystem("s3://bucket/studies/quick")
    storage.write_text(storage.join(loc, "config.yaml"), text)

S3-compatible servers (MinIO, Ceph, moto …) are reached with an endpoint override taken from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (``--storage-endpoint`` of ``study.launch``
sets it, and :func:`worker_env` carries it to every Ray worker). Credentials come from the
usual AWS/GCP chains on each node (instance profile, ``~/.aws/credentials``, environment);
they are never put in a job's runtime environment.

What must stay on the head (Optuna's journals, mirrored to the location): :mod:`study.journal`.
Whether a local path is shared by the cluster's hosts: :mod:`study.mounts`.

This module imports neither Ray nor torch (the launcher validates its input before either).
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# Environment carried to Ray workers so that they open the same filesystem (no secrets here).
WORKER_ENV_VARS = (*ENDPOINT_VARS, "AWS_DEFAULT_REGION", "AWS_REGION", "SALIENCY_STORAGE_SHARED")


class StorageError(ValueError):
    """A storage location is malformed, unreachable, or not shared where it must be."""


# --------------------------------------------------------------------------- locations
def scheme(loc) -> str:
    """``s3`` for ``s3://b/p``; '' for a local path (``file://`` included)."""
    s = str(loc)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", s)
    if not m:
        return ""
    sch = m.group(1).lower()
    return "" if sch == "file" else sch


def is_remote(loc) -> bool:
    """True for an object-store URI (``s3://``, ``gs://`` …), False for a local path."""
    return bool(scheme(loc))


def normalize(loc) -> str:
    """The canonical form of a location: an absolute local path, or ``scheme://bucket/key`` without
    a trailing slash. Raises :class:`StorageError` naming what is wrong."""
    s = str(loc).strip()
    if not s:
        raise StorageError("empty storage location; give a path or a URI such as s3://bucket/studies")
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", s)
    if not m:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:/", s) and not re.match(r"^[A-Za-z]:[\\/]", s):
            raise StorageError(f"{s}: malformed URI (expected scheme://bucket/path, e.g. s3://bucket/studies)")
        return str(Path(s).expanduser().absolute())
    sch, rest = m.group(1).lower(), m.group(2)
    if sch == "file":
        if not rest.startswith("/"):
            raise StorageError(f"{s}: a file:// URI needs an absolute path (file:///shared/studies)")
        return str(Path(rest).absolute())
    if sch not in REMOTE_SCHEMES:
        raise StorageError(
            f"{s}: unsupported storage scheme {sch!r}; use s3://bucket/prefix, gs://bucket/prefix, "
            f"hdfs://…, or a filesystem path every node mounts"
        )
    parts = urlsplit(s)
    if parts.query or parts.fragment:
        raise StorageError(
            f"{s}: options in the URI are not supported; give the endpoint with --storage-endpoint "
            f"(or AWS_ENDPOINT_URL) instead"
        )
    bucket = parts.netloc
    if not bucket and sch not in ("hdfs", "viewfs"):
        raise StorageError(f"{s}: no bucket; expected {sch}://bucket/prefix")
    key = "/".join(p for p in parts.path.split("/") if p)
    if any(p in (".", "..") for p in key.split("/")):
        raise StorageError(f"{s}: '.' and '..' are not allowed in an object-store path")
    return f"{sch}://{bucket}" + (f"/{key}" if key else "")


def join(loc, *parts) -> str:
    """``loc/part/...`` for a path or a URI (parts may hold ``/``)."""
    base = str(loc).rstrip("/") if is_remote(loc) else str(loc)
    if not is_remote(loc):
        return str(Path(base, *[str(p) for p in parts]))
    tail = "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
    return f"{base}/{tail}" if tail else base


def name(loc) -> str:
    """The last component of a location."""
    return str(loc).rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- filesystems
_FS_CACHE: dict[tuple, pafs.FileSystem] = {}
_FS_LOCK = threading.Lock()


def endpoint() -> str:
    """The S3 endpoint override from the environment ('' = AWS itself)."""
    for var in ENDPOINT_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return ""


def check_endpoint(url: str) -> str:
    """``url`` if it is an http(s)://host[:port] endpoint, else :class:`StorageError`."""
    u = urlsplit(str(url))
    if u.scheme not in ("http", "https") or not u.netloc or u.path not in ("", "/"):
        raise StorageError(f"storage endpoint {url!r}: expected http(s)://host:port")
    return str(url).rstrip("/")


def _s3(ep: str) -> pafs.FileSystem:
    kwargs: dict = {"allow_delayed_open": True}  # small objects: one PUT, no multipart upload
    if ep:
        u = urlsplit(ep if "://" in ep else f"https://{ep}")
        if u.scheme not in ("http", "https") or not u.netloc:
            raise StorageError(f"storage endpoint {ep!r}: expected http(s)://host:port")
        kwargs.update(endpoint_override=u.netloc, scheme=u.scheme)
        # a custom endpoint has no region lookup; pyarrow would otherwise ask AWS for one
        kwargs["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    elif os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        kwargs["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return pafs.S3FileSystem(**kwargs)


def filesystem(loc) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of a location."""
    loc = normalize(loc)
    sch = scheme(loc)
    if not sch:
        return pafs.LocalFileSystem(), loc
    rest = loc.split("://", 1)[1]
    if sch == "s3":
        ep = endpoint()
        key = ("s3", ep, os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "")
        with _FS_LOCK:
            fs = _FS_CACHE.get(key)
            if fs is None:
                fs = _FS_CACHE[key] = _s3(ep)
        return fs, rest
    try:
        fs, path = pafs.FileSystem.from_uri(loc)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise StorageError(f"{loc}: cannot open this storage ({exc})") from None
    return fs, path.rstrip("/")


def location_of(fs: pafs.FileSystem, path: str) -> str:
    """The location of ``path`` inside ``fs`` (e.g. a Tune checkpoint's ``(filesystem, path)``)."""
    tn = getattr(fs, "type_name", "local")
    if tn in ("local", "mock") or isinstance(fs, pafs.LocalFileSystem):
        return str(Path(path).absolute())
    if tn == "s3":
        return f"s3://{path.lstrip('/')}"
    if tn == "gcs":
        return f"gs://{path.lstrip('/')}"
    if tn == "py":  # a wrapped fsspec filesystem
        protocol = getattr(getattr(fs.handler, "fs", None), "protocol", "")
        protocol = protocol[0] if isinstance(protocol, (tuple, list)) else protocol
        if protocol and protocol not in ("file", "local"):
            return f"{protocol}://{path.lstrip('/')}"
        return str(Path(path).absolute())
    return f"{tn}://{path.lstrip('/')}"


def tune_storage(loc) -> tuple[str, pafs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for Tune's ``RunConfig`` / ``Tuner.restore``."""
    loc = normalize(loc)
    if not is_remote(loc):
        return loc, None
    fs, path = filesystem(loc)
    return path, fs


def worker_env() -> dict[str, str]:
    """Environment variables Ray workers need to open the same storage (endpoint, region)."""
    return {k: os.environ[k] for k in WORKER_ENV_VARS if os.environ.get(k)}


# --------------------------------------------------------------------------- file operations
def _info(loc) -> pafs.FileInfo:
    fs, path = filesystem(loc)
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise StorageError(f"{loc}: cannot reach the storage ({_short(exc)})") from None


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def exists(loc) -> bool:
    return _info(loc).type != pafs.FileType.NotFound


def is_file(loc) -> bool:
    return _info(loc).type == pafs.FileType.File


def is_dir(loc) -> bool:
    return _info(loc).type == pafs.FileType.Directory


def makedirs(loc) -> None:
    if not is_remote(loc):
        Path(normalize(loc)).mkdir(parents=True, exist_ok=True)
        return
    fs, path = filesystem(loc)
    fs.create_dir(path, recursive=True)


def read_bytes(loc) -> bytes:
    if not is_remote(loc):
        return Path(normalize(loc)).read_bytes()
    fs, path = filesystem(loc)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{loc}: no such file") from None


def read_text(loc) -> str:
    return read_bytes(loc).decode("utf-8")


def write_bytes(loc, data: bytes) -> str:
    """Write ``data`` to ``loc`` whole: a local file is written under a temporary name and renamed;
    an object is one PUT (readers see the old object or the new one, never a part)."""
    loc = normalize(loc)
    if not is_remote(loc):
        p = Path(loc)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f".{p.name}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return loc
    fs, path = filesystem(loc)
    with fs.open_output_stream(path) as f:
        f.write(data)
    return loc


def write_text(loc, text: str) -> str:
    return write_bytes(loc, text.encode("utf-8"))


def write_parquet(table: pa.Table, loc) -> str:
    """Write an Arrow table as one Parquet file at ``loc`` (atomically, see :func:`write_bytes`)."""
    import pyarrow.parquet as pq

    loc = normalize(loc)
    if not is_remote(loc):
        p = Path(loc)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f".{p.stem}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, p)
        return loc
    fs, path = filesystem(loc)
    pq.write_table(table, path, filesystem=fs)
    return loc


def list_files(loc, suffix: str = "") -> list[str]:
    """Paths of the files under ``loc`` (recursive), relative to it, sorted; [] if it is missing."""
    fs, base = filesystem(loc)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"{loc}: cannot list ({_short(exc)})") from None
    base = base.rstrip("/")
    out = [i.path[len(base) + 1:] for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)]
    return sorted(out)


def delete(loc) -> None:
    """Remove a file or a folder (recursively); nothing if it does not exist."""
    fs, path = filesystem(loc)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def move(src, dst) -> None:
    """Move a file to ``dst`` (replacing it): a rename for a local file, a copy then delete for an object."""
    if not is_remote(src) and not is_remote(dst):
        Path(normalize(dst)).parent.mkdir(parents=True, exist_ok=True)
        os.replace(normalize(src), normalize(dst))
        return
    write_bytes(dst, read_bytes(src))
    delete(src)


def upload(local: str | Path, loc) -> None:
    """Copy a local file to ``loc``."""
    write_bytes(loc, Path(local).read_bytes())


def download(loc, local: str | Path) -> None:
    """Copy ``loc`` to a local file (written under a temporary name, then renamed)."""
    p = Path(local)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(read_bytes(loc))
    os.replace(tmp, p)


def check_access(loc) -> None:
    """Fail early, with the reason, if ``loc`` cannot be written and read back (bucket missing,
    wrong endpoint, no credentials). A local folder is created if needed."""
    loc = normalize(loc)
    probe = join(loc, f".probe-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"ok")
        ok = read_bytes(probe) == b"ok"
        delete(probe)
    except (OSError, StorageError) as exc:
        hint = ""
        if scheme(loc) == "s3":
            ep = endpoint()
            hint = (f" (endpoint {ep})" if ep else " (AWS; set --storage-endpoint or AWS_ENDPOINT_URL for another "
                    "S3-compatible server)") + "; check that the bucket exists and that credentials are set"
        raise StorageError(f"{loc}: cannot write to this storage{hint}: {_short(exc)}") from None
    if not ok:
        raise StorageError(f"{loc}: a file written there did not read back the same")
