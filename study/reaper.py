"""The launcher's private Ray goes down with the launcher.

Ray ties its GCS and raylet to the process that started them, but not its agents and workers:
after a SIGKILL of the launcher they lived on for minutes. :func:`guard_private_ray`, called
before the launcher starts its private Ray, marks every process of that Ray (an environment
variable they all inherit: the launcher's pid, its start time and the study folder) and starts a
small watcher (``python -m study.reaper``, its own session, so a signal to the launcher's group
leaves it alone) that kills the marked processes once the launcher is gone, however it ended.
A launcher that finds the marked processes of a previous, dead launcher of the same study
folder (the watcher was killed too) stops them first, with one printed line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MARK_ENV = "SALIENCY_PRIVATE_RAY"  # "<launcher pid>:<its start time>:<study location>"
POLL_S = 0.5


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a pid reused by another process apart);
    None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]  # state (field 3), starttime (field 22)


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


def kill(pids) -> int:
    n = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n


def stop_leftovers(location: str) -> tuple[int, set[str]]:
    """Kill the marked processes of dead launchers of ``location``; (how many, the dead launchers' pids)."""
    left = {pid: m for pid, m in marked().items() if m.split(":", 2)[2] == location and not alive(m)}
    return kill(left), {m.split(":", 1)[0] for m in left.values()}


def guard_private_ray(location: str, log=print) -> None:
    """Before ``ray.init`` of a private Ray: stop a dead launcher's leftovers, mark this Ray, start the watcher."""
    if not sys.platform.startswith("linux"):
        return  # /proc is Linux's
    n, pids = stop_leftovers(location)
    if n:
        log(f"[study] stopped {n} leftover process(es) of the private Ray of an earlier run on this folder "
            f"(launcher pid {', '.join(sorted(pids))}, gone)")
    mark = f"{os.getpid()}:{start_time(os.getpid())}:{location}"
    subprocess.Popen([sys.executable, "-m", "study.reaper", mark], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                     cwd=str(Path(__file__).resolve().parents[1]), env={**os.environ, MARK_ENV: mark})
    os.environ[MARK_ENV] = mark  # inherited by the GCS, the raylet, its agents and every worker


def watch(mark: str) -> None:
    """Wait for the launcher the mark names to end, then kill whatever still carries its mark."""
    while alive(mark):
        time.sleep(POLL_S)
    for _ in range(3):  # a worker may be starting while the first pass runs
        kill(marked(mark))
        time.sleep(POLL_S)


if __name__ == "__main__":
    watch(sys.argv[1])
