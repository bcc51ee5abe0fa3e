"""One run per study folder: a launch holds the folder's lock for as long as it runs.

A local (or shared-filesystem) folder gets an advisory ``fcntl.flock`` on ``<folder>/.lock``, which the
operating system drops when its process ends, however it ends; the file records the owner (host, pid,
start time, command) for the message a second launch prints. An object-store study (``s3://…``) has no
locks: it gets a lease object ``<location>/.lease.json`` with the same owner fields and a renewal time,
renewed while the run lasts; a lease is taken over only when its owner is gone (same host: its pid no
longer runs; another host: not renewed for :data:`LEASE_TTL_S` seconds).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import threading
import time
import uuid
from pathlib import Path

from foundations import storage
from study.config import ConfigError

LOCK_FILE = ".lock"
LEASE_FILE = ".lease.json"
LEASE_TTL_S = 120.0  # a lease not renewed for this long belongs to a run that is gone
RENEW_S = 20.0

_HELD: list = []  # the locks this process holds (released by release_all)


class StudyBusy(ConfigError):
    """Another run holds the study folder."""


def owner() -> dict:
    return {"host": platform.node(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "python -m study.launch " + " ".join(sys.argv[1:]), "renewed": time.time(),
            "token": uuid.uuid4().hex}


def _who(info: dict) -> str:
    return (f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}: "
            f"{info.get('command', '?')}")


class FileLock:
    """An advisory lock on ``<folder>/.lock`` (released by the OS when the process ends)."""

    def __init__(self, folder: str) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 65536, 0) or b"{}")
            except ValueError:
                info = {}
            os.close(fd)
            raise StudyBusy(
                f"output: {self.path.parent} is in use by another run of this study ({_who(info)}); valid choices: "
                f"wait for it to finish, stop it (Ctrl-C, or kill -INT {info.get('pid', 'PID')} on "
                f"{info.get('host', 'its host')}) and rerun with --resume, or another --output; the lock "
                f"({self.path}) goes with that process"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner()) + "\n").encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _gone(info: dict) -> bool:
    """True if the lease's owner no longer runs (see the module docstring)."""
    if info.get("host") == platform.node():
        try:
            os.kill(int(info.get("pid", -1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
        return False
    return time.time() - float(info.get("renewed", 0)) > LEASE_TTL_S


class Lease:
    """A lease object ``<location>/.lease.json`` for an object-store study, renewed by a thread."""

    def __init__(self, location: str, log=print) -> None:
        self.loc, self.log = storage.join(location, LEASE_FILE), log
        self.info: dict | None = None
        self._stop = threading.Event()

    def _read(self) -> dict | None:
        try:
            return json.loads(storage.read_text(self.loc)) if storage.exists(self.loc) else None
        except ValueError:
            return {}

    def acquire(self) -> None:
        held = self._read()
        if held is not None and not _gone(held):
            raise StudyBusy(
                f"output: {self.loc.rsplit('/', 1)[0]} is in use by another run of this study ({_who(held)}); "
                f"valid choices: wait for it to finish, stop it and rerun with --resume, or another --output; "
                f"a lease whose owner is gone is taken over after {LEASE_TTL_S:g} s without renewal "
                f"(to break it now: delete {self.loc})"
            )
        if held is not None:
            self.log(f"[study] taking over the lease of a run that is gone ({_who(held)})")
        self.info = owner()
        storage.write_text(self.loc, json.dumps(self.info))
        if (self._read() or {}).get("token") != self.info["token"]:  # another launch wrote it at the same time
            raise StudyBusy(f"output: {self.loc}: another run took the study's lease at the same moment; "
                            f"valid choices: wait for it to finish, or another --output")
        threading.Thread(target=self._renew, name="study-lease", daemon=True).start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                storage.write_text(self.loc, json.dumps({**self.info, "renewed": time.time()}))
            except (OSError, storage.StorageError) as exc:  # the next renewal tries again
                self.log(f"[study] could not renew the lease {self.loc}: {exc}")

    def release(self) -> None:
        self._stop.set()
        if self.info is not None and (self._read() or {}).get("token") == self.info["token"]:
            storage.delete(self.loc)
        self.info = None


def acquire(location: str, log=print):
    """Take the study folder's lock (a lease for an object-store study); raises :class:`StudyBusy`."""
    lock = Lease(location, log) if storage.is_remote(location) else FileLock(storage.normalize(location))
    try:
        lock.acquire()
    except (OSError, storage.StorageError) as exc:
        raise ConfigError(f"output: cannot take the study's lock in {location}: {exc}") from None
    _HELD.append(lock)
    return lock


def release_all() -> None:
    """Release every lock this process holds (the end of a launch)."""
    while _HELD:
        _HELD.pop().release()
