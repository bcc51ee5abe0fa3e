"""The launcher's private Ray goes down with the launcher: after a SIGKILL of a real launcher no process of its
Ray (agents, workers) lives on, and a --resume that finds an earlier run's leftovers stops them first.

The test tells the launcher's processes apart by a variable of its own in the launcher's environment (every
process the launcher starts, and every process those start, inherits it)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.study.test_launch_faults import REPO, _cmd, _env

TOKEN_ENV = "SALIENCY_TEST_RUN_TOKEN"


def _processes(token: str) -> dict[int, str]:
    """pid -> command line of every process carrying ``token`` in its environment."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes()
            if f"{TOKEN_ENV}={token}".encode() in env.split(b"\0"):
                out[int(d)] = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            continue
    return out


def _kill_all(token: str) -> None:
    for pid in _processes(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_and_wait_for_a_trial(out: Path, env: dict, log: Path) -> subprocess.Popen:
    journal = out / "optuna" / "mnist-none.journal"
    p = subprocess.Popen(_cmd(out), cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    deadline = time.time() + 300
    while not (journal.exists() and journal.stat().st_size > 0):
        assert p.poll() is None, "the run ended early:\n" + log.read_text()
        assert time.time() < deadline, "no trial started:\n" + log.read_text()
        time.sleep(0.1)
    time.sleep(1.0)  # the trial's worker is up
    return p


def _gone_within(token: str, seconds: float) -> dict[int, str]:
    deadline = time.time() + seconds
    while (left := _processes(token)) and time.time() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.ray
def test_sigkill_of_the_launcher_takes_its_private_ray_down(tmp_path, data_root):
    """SIGKILL to the launcher's pid alone: its raylet's agents and workers used to live on for minutes."""
    token = uuid.uuid4().hex
    p = _start_and_wait_for_a_trial(tmp_path / "k", {**_env(data_root), TOKEN_ENV: token}, tmp_path / "run.log")
    try:
        ray_procs = {pid: c for pid, c in _processes(token).items() if pid != p.pid}
        assert any("raylet" in c for c in ray_procs.values()) and any("ray::" in c for c in ray_procs.values()), (
            ray_procs)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        # (before: agents and python helpers for 30-60 s on this machine, 3.5 min elsewhere; the watcher: < 2 s)
        left = _gone_within(token, 15)
        assert not left, f"still running 15 s after the launcher was killed: {sorted(left.values())}"
    finally:
        _kill_all(token)


@pytest.mark.ray
def test_resume_stops_the_leftovers_of_an_earlier_private_ray_first(tmp_path, data_root):
    """The launcher and its watcher both SIGKILLed: a --resume on the folder stops what is left, says so once."""
    token, out = uuid.uuid4().hex, tmp_path / "k"
    p = _start_and_wait_for_a_trial(out, {**_env(data_root), TOKEN_ENV: token}, tmp_path / "run.log")
    try:
        watchers = [pid for pid, c in _processes(token).items() if "study.reaper" in c]
        for pid in [p.pid, *watchers]:
            os.kill(pid, signal.SIGKILL)
        p.wait()
        time.sleep(1.0)
        left = _processes(token)
        assert left, "nothing left to stop: the test needs the earlier run's agents and workers still up"
        r = subprocess.run(_cmd(out, "--resume", "-q"), cwd=REPO, env=_env(data_root), capture_output=True,
                           text=True, timeout=600, start_new_session=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        said = [ln for ln in r.stdout.splitlines() if "leftover process(es) of the private Ray" in ln]
        assert len(said) == 1 and f"launcher pid {p.pid}" in said[0], r.stdout[-3000:]
        assert not _processes(token), sorted(_processes(token).values())
    finally:
        _kill_all(token)
