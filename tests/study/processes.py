"""Run a real launcher and signal it at the right moment: the fault tests' one way of doing it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]


def signal_when(cmd: list[str], env: dict, log: Path, ready: Callable[[], bool], send: Callable[[int], None], *,
                settle: float = 0.0, timeout: float = 300, wait: float = 180, what: str = "signalled",
                preexec_fn=None) -> tuple[int | None, str]:
    """Run ``cmd`` in its own session (output to ``log``); once ``ready()`` holds and ``settle`` more seconds have
    passed, ``send(pid)``; return its exit code (None if it did not exit within ``wait`` s) and its output.
    Whatever is left of its process group (its Ray) is killed afterwards, so that no two runs overlap."""
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=preexec_fn)
        try:
            deadline = time.time() + timeout
            while not ready():
                assert p.poll() is None, f"the run ended before it could be {what}:\n" + log.read_text()
                assert time.time() < deadline, f"timed out waiting to be {what}:\n" + log.read_text()
                time.sleep(0.05)
            time.sleep(settle)
            send(p.pid)
            try:
                rc = p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                rc = None
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return rc, log.read_text()


def sigkill(pid: int) -> None:
    """SIGKILL to the launcher's pid alone (its Ray is left to whatever ties it to the launcher)."""
    os.kill(pid, signal.SIGKILL)


def result_lines(exp: Path) -> dict[str, list[dict]]:
    """Tune's result.json lines of every trial folder of the experiment ``exp``: trial id -> records."""
    out = {}
    for f in exp.glob("*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if lines:
            out[f.parent.name] = lines
    return out
