"""Optuna's journals: one file per (dataset, penalty) search, kept on the head, mirrored to the study.

Optuna's ``JournalFileBackend`` needs a local file with working locks, so with a remote location
(``s3://…``) the journals live in a head-local state folder (:func:`local_state_dir`) and are copied
to ``<location>/optuna/`` after every finished trial (:class:`JournalSync`, a Tune callback) and
every finished search (:func:`push_journal`); a restarted driver on a fresh head gets them back
first (:func:`pull_journal`). With a local location they are written in the study folder itself and
nothing is copied. Open one with ``optuna-dashboard`` or ``optuna.visualization`` (docs/usage.md).

This module imports neither Ray nor torch (the callback class is built on first use).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

from foundations.storage import StorageError, download, is_remote, join, list_files, name, normalize, write_bytes


def state_root() -> Path:
    return Path(os.environ.get("SALIENCY_STATE_DIR") or Path.home() / ".cache" / "saliency-study").absolute()


def local_state_dir(loc) -> Path:
    """Where head-only state lives (Optuna's journal): the study folder itself when it is local,
    else a folder on this machine named after the location."""
    loc = normalize(loc)
    if not is_remote(loc):
        return Path(loc)
    digest = hashlib.sha256(loc.encode()).hexdigest()[:12]
    return state_root() / f"{name(loc) or 'study'}-{digest}"


JOURNAL_DIR = "optuna"  # Optuna journals, one file per (dataset, penalty) search


def journal_dir(loc) -> Path:
    """The local folder of the study's Optuna journals (always on this machine: they need file locks)."""
    return local_state_dir(loc) / JOURNAL_DIR


def pull_journal(loc) -> int:
    """Before a (possibly restarted) driver searches: fetch from the storage the journals this head
    lacks (a new head after a failure). Returns how many were fetched."""
    if not is_remote(loc):
        return 0
    n = 0
    for rel in list_files(join(loc, JOURNAL_DIR)):
        local = journal_dir(loc) / rel
        if not local.exists():
            download(join(loc, JOURNAL_DIR, rel), local)
            n += 1
    return n


class JournalDamaged(ValueError):
    """A journal holds damage other than a torn last record: it is not repaired."""


def repair_journal(path: Path, log=print) -> bool:
    """Drop a torn last record (the bytes after the last newline, which a crash during a write leaves) from
    one journal, keeping the damaged file as ``<name>.torn-<time>``; True if repaired. Any other damage (a
    complete line that is not a record) raises :class:`JournalDamaged` naming the file and the line."""
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    for i, line in enumerate(data[:cut].splitlines(), 1):
        try:
            json.loads(line)
        except ValueError:
            raise JournalDamaged(
                f"optuna journal {path}: line {i} is not a journal record (damage other than a torn last record); "
                f"valid choices: restore the file from a copy, or delete it and the search's tune/{path.stem}/ "
                f"folder to search {path.stem} again"
            ) from None
    if cut == len(data):
        return False
    copy = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}")
    copy.write_bytes(data)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data[:cut])
    os.replace(tmp, path)
    log(f"[search] {path}: dropped a torn last record ({len(data) - cut} bytes that a crash cut mid-write); "
        f"the damaged file is kept as {copy.name}")
    return True


def repair_journals(loc, log=print) -> int:
    """:func:`repair_journal` on every journal of the study (before a search reads them); how many were repaired."""
    d = journal_dir(loc)
    return sum(repair_journal(f, log) for f in sorted(d.glob("*.journal"))) if d.is_dir() else 0


_PUSH_LOCK = threading.Lock()
_PUSHED: dict[str, tuple] = {}


def push_journal(loc) -> int:
    """Copy the local journals that changed to ``<loc>/optuna/`` (remote locations only)."""
    if not is_remote(loc):
        return 0
    d, n = journal_dir(loc), 0
    if not d.is_dir():
        return 0
    with _PUSH_LOCK:
        for f in sorted(d.iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            st = f.stat()
            sig = (st.st_size, st.st_mtime_ns)
            if _PUSHED.get(str(f)) == sig:
                continue
            write_bytes(join(loc, JOURNAL_DIR, f.name), f.read_bytes())
            _PUSHED[str(f)] = sig
            n += 1
    return n


def forget_local_state(loc) -> None:
    """A new study at a remote location: drop the journals this head kept from an earlier study that
    used the same location (the storage was emptied since), so that its searches start afresh."""
    if not is_remote(loc):
        return
    d = journal_dir(loc)
    if d.is_dir():
        for f in d.iterdir():
            if f.is_file():
                f.unlink()
                _PUSHED.pop(str(f), None)


def _make_journal_sync():
    from ray.tune import Callback

    class JournalSync(Callback):
        """Tune callback: push the Optuna journal to the storage when a trial completes or fails."""

        def __init__(self, location: str):
            self.location = normalize(location)

        def _push(self) -> None:
            try:
                push_journal(self.location)
            except (OSError, StorageError) as exc:  # never fail a search for a backup copy
                print(f"[storage] could not copy the Optuna journal to {self.location}: {exc}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._push()

        def on_trial_error(self, iteration, trials, trial, **info):
            self._push()

        def on_experiment_end(self, trials, **info):
            self._push()

    JournalSync.__module__, JournalSync.__qualname__ = __name__, "JournalSync"
    return JournalSync


def __getattr__(attr: str):
    # JournalSync subclasses ray.tune.Callback: built on first use (this module must not import Ray),
    # then a module attribute, so that Tune can pickle it with the experiment's state.
    if attr == "JournalSync":
        cls = globals()["JournalSync"] = _make_journal_sync()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def journal_sync_callback(loc):
    """A Tune callback that pushes the journal whenever a trial completes or fails (remote only)."""
    import study.journal as me

    return me.JournalSync(loc)
