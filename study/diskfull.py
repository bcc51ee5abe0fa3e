"""A full disk under the study folder, told in one line.

A write that fails with ENOSPC surfaces far from its cause: as a ``RayTaskError`` of a search or
evaluation task, sometimes as the error of reading back a file the failed write truncated. The
launcher asks :func:`disk_full` about any error that ends a run: true when the error chain holds
ENOSPC, or when the study folder's filesystem has (almost) no space left; :func:`message` is the
line to print, after :func:`discard_partial` has removed what the failed writes left half-written
(Tune's experiment state, checkpoints), so a later ``--resume`` finds only whole files. Any other error
is left alone (raised as before).
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

LOW_BYTES = 1 << 20  # less than this free under the study folder: the disk is full for a study


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__  # RayTaskError keeps its .cause


def mentions_enospc(exc: BaseException) -> bool:
    return any((isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)
               for e in _chain(exc))


def _existing(location: str) -> Path | None:
    p = Path(location)
    return next((q for q in (p, *p.parents) if q.exists()), None)


def free_bytes(location: str) -> int | None:
    """Free space of the filesystem that holds ``location`` (None for an object store or an unreadable one)."""
    if "://" in location and not location.startswith("file://"):
        return None
    where = _existing(location.removeprefix("file://"))
    try:
        return shutil.disk_usage(where).free if where is not None else None
    except OSError:
        return None


def disk_full(exc: BaseException, location: str) -> bool:
    """Whether ``exc`` ended the run because the study folder's disk is full."""
    free = free_bytes(location)
    return mentions_enospc(exc) or (free is not None and free < LOW_BYTES)


class _NoENOSPCRecords(logging.Filter):
    """Drops log records about ENOSPC (Tune's sync retries, each failed trial's traceback): a run the full disk
    ends, ends with :func:`message`'s one line; a run that gets its space back goes on."""

    seen = False  # an ENOSPC record was dropped: Tune's closing "Trials did not complete" is its echo

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if (exc is not None and mentions_enospc(exc)) or "No space left on device" in record.getMessage():
            _NoENOSPCRecords.seen = True
            return False
        return not (_NoENOSPCRecords.seen and record.getMessage().startswith("Trials did not complete"))


def quiet_ray_logs() -> None:
    """Install the filter on the handlers of Ray's and the root logger (the driver's Tune runs log there)."""
    for name in ("ray", ""):
        for h in logging.getLogger(name).handlers:
            if not any(isinstance(f, _NoENOSPCRecords) for f in h.filters):
                h.addFilter(_NoENOSPCRecords())


def _whole_json(f: Path) -> bool:
    try:
        json.loads(f.read_text())
        return True
    except (OSError, ValueError):
        return False


def discard_partial(location: str) -> list[str]:
    """Remove what writes cut by the full disk left under ``location/tune`` (a local folder): Tune experiment
    states that are not whole JSON, and checkpoints holding an empty file. Returns the removed paths (relative);
    a resume then restores each search from its last whole state, as it would have after discarding them."""
    import shutil as sh

    root = Path(location.removeprefix("file://")) / "tune"
    if "://" in location and not location.startswith("file://") or not root.is_dir():
        return []
    gone = [f for f in root.glob("*/experiment_state-*.json") if not _whole_json(f)]
    gone += [c for c in root.glob("*/*/checkpoint_*") if c.is_dir() and any(
        f.is_file() and f.stat().st_size == 0 for f in c.rglob("*"))]
    for g in gone:
        sh.rmtree(g) if g.is_dir() else g.unlink()
    return [str(g.relative_to(root.parent)) for g in gone]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def message(location: str, removed: list[str] = ()) -> str:
    """``error: FOLDER: no space left on the device (...); free space, then --resume``."""
    free = free_bytes(location)
    held = ""
    root = Path(location)
    if free is not None and root.is_dir():
        held = f"; the study holds {_size(sum(f.stat().st_size for f in root.rglob('*') if f.is_file()))} so far"
    have = f"{_size(free)} free" if free is not None else "the object store refused a write"
    if removed:
        held += f"; removed {len(removed)} half-written file(s) of Tune's state ({', '.join(removed[:3])}" + (
            ", …)" if len(removed) > 3 else ")")
    return f"error: {location}: no space left on the device ({have}{held}); free space, then --resume"
