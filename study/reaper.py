"""The launcher's private Ray goes down with the launcher.

Ray ties its GCS and raylet to the process that started them, but not its agents and workers:
after a SIGKILL of the launcher they lived on for minutes. :func:`guard_private_ray`, called
before the launcher starts its private Ray, marks every process of that Ray (an environment
variable they all inherit: the launcher's pid, its start time and the study folder) and starts a
small watcher (``python -m study.reaper``, its own session, so a signal to the launcher's group
leaves it alone). While the launcher lives, the watcher also records the launcher's descendants
(pid and start time, in a small file under the temporary folder), so that a process whose
environment cannot be read is still known. Once the launcher is gone, however it ended, the
watcher kills the marked and recorded processes and their children until none is left.
A launcher that finds the marked or recorded processes of a previous, dead launcher of the same
study folder (the watcher was killed too) stops them first, with one printed line.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARK_ENV = "SALIENCY_PRIVATE_RAY"  # "<launcher pid>:<its start time>:<study location>"
POLL_S = 0.5
REAP_S = 10.0  # how long the watcher keeps looking for processes to stop once the launcher is gone
STATE_DIR = Path(tempfile.gettempdir()) / f"saliency-private-ray-{os.getuid()}"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a pid reused by another process apart);
    None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]  # state (field 3), starttime (field 22)


def process_table() -> dict[int, tuple[int, str]]:
    """Every live process: pid -> (parent pid, start time)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            out[int(d)] = (int(fields[1]), fields[19])
    return out


def descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    """The children of ``roots``, their children, and so on (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(mark: str) -> bool:
    """Whether the launcher a mark names still runs."""
    pid, started, _ = mark.split(":", 2)
    return start_time(int(pid)) == started


def marked(mark_prefix: str = "") -> dict[int, str]:
    """Processes of this user carrying a private-Ray mark that starts with ``mark_prefix``: pid -> mark."""
    me, out = os.getpid(), {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes()
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(MARK_ENV.encode() + b"="):
                mark = item.split(b"=", 1)[1].decode(errors="replace")
                if mark.startswith(mark_prefix):
                    out[int(d)] = mark
                break
    return out


def kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def state_file(location: str) -> Path:
    """Where the watcher of a study folder's launcher records that launcher's descendants."""
    return STATE_DIR / (hashlib.sha1(location.encode()).hexdigest()[:16] + ".pids")


def read_state(location: str) -> tuple[str | None, dict[int, str]]:
    """(the recording launcher's mark, its recorded descendants: pid -> start time); (None, {}) when none."""
    try:
        mark, *rows = state_file(location).read_text().splitlines()
    except (OSError, ValueError):
        return None, {}
    recorded = {}
    for row in rows:
        pid, _, started = row.partition(" ")
        if pid.isdigit() and started:
            recorded[int(pid)] = started
    return mark, recorded


def write_state(location: str, mark: str, recorded: dict[int, str]) -> None:
    path = state_file(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("\n".join([mark, *(f"{pid} {s}" for pid, s in sorted(recorded.items()))]) + "\n")
    os.replace(tmp, path)


def reap(mark: str, recorded: dict[int, str], seconds: float = REAP_S) -> int:
    """Kill what carries ``mark``, the recorded processes that still run, and all their children, until a few
    passes in a row find nothing (a worker may be starting while a pass runs); how many processes it killed."""
    me, stopped, quiet, deadline = os.getpid(), set(), 0, time.time() + seconds
    while quiet < 3 and time.time() < deadline:
        table = process_table()
        targets = set(marked(mark)) | {p for p, s in recorded.items() if table.get(p, (0, None))[1] == s}
        targets = (targets | descendants(targets, table)) - {me}
        if targets:
            kill(targets)
            stopped, quiet = stopped | {(p, table[p][1]) for p in targets if p in table}, 0
        else:
            quiet += 1
        time.sleep(POLL_S)
    return len(stopped)


def stop_leftovers(location: str) -> tuple[int, set[str]]:
    """Kill what dead launchers of ``location`` left (marked or recorded); (kills sent, the dead launchers' pids)."""
    marks = {m for m in marked().values() if m.split(":", 2)[2] == location and not alive(m)}
    state_mark, recorded = read_state(location)
    if state_mark and not alive(state_mark):
        marks.add(state_mark)
    n, dead = 0, set()
    for mark in marks:
        sent = reap(mark, recorded if mark == state_mark else {}, seconds=2.0)
        n, dead = n + sent, dead | ({mark.split(":", 1)[0]} if sent else set())
    if state_mark in marks:
        state_file(location).unlink(missing_ok=True)
    return n, dead


def guard_private_ray(location: str, log=print) -> None:
    """Before ``ray.init`` of a private Ray: stop a dead launcher's leftovers, mark this Ray, start the watcher."""
    if not sys.platform.startswith("linux"):
        return  # /proc is Linux's
    n, pids = stop_leftovers(location)
    if n:
        log(f"[study] stopped {n} leftover process(es) of the private Ray of an earlier run on this folder "
            f"(launcher pid {', '.join(sorted(pids))}, gone)")
    mark = f"{os.getpid()}:{start_time(os.getpid())}:{location}"
    try:  # the watcher's one line per launcher, for an operator who wonders what it stopped
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        err = open(state_file(location).with_suffix(".log"), "a")
    except OSError:
        err = subprocess.DEVNULL
    subprocess.Popen([sys.executable, "-m", "study.reaper", mark], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                     cwd=str(Path(__file__).resolve().parents[1]), env={**os.environ, MARK_ENV: mark})
    if err is not subprocess.DEVNULL:
        err.close()  # the watcher holds its own copy
    os.environ[MARK_ENV] = mark  # inherited by the GCS, the raylet, its agents and every worker


def watch(mark: str) -> None:
    """Record the launcher's descendants while it runs; once it has ended, stop them and whatever carries its mark."""
    launcher, location = int(mark.split(":", 1)[0]), mark.split(":", 2)[2]
    me, recorded = os.getpid(), {}
    while alive(mark):
        table = process_table()
        new = {p: table[p][1] for p in descendants({launcher}, table) - {me} if p not in recorded}
        if new:
            recorded.update(new)
            try:
                write_state(location, mark, recorded)
            except OSError:
                pass  # the environment marks still work
        time.sleep(POLL_S)
    n = reap(mark, recorded)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} launcher {launcher} gone: stopped {n} process(es) "
          f"({len(recorded)} descendant(s) recorded)", file=sys.stderr, flush=True)
    if read_state(location)[0] == mark:
        state_file(location).unlink(missing_ok=True)


if __name__ == "__main__":
    watch(sys.argv[1])
