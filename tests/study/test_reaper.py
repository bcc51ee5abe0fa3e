"""The launcher's private Ray goes down with the launcher: after a SIGKILL of a real launcher no process of its
Ray (agents, workers) lives on, a process the launcher started is stopped even when its environment carries no
mark, and a launch that finds a dead launcher's leftovers on its folder stops them first.

The test tells a run's processes apart by a variable of its own in the launcher's environment (every process the
launcher starts, and every process those start, inherits it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from study import reaper
from tests.study.test_launch_faults import REPO, _cmd, _env

TOKEN_ENV = "SALIENCY_TEST_RUN_TOKEN"

# a stand-in launcher: guards a folder as study.launch does, then starts one child that inherits the mark and
# one whose environment lacks it (known to the watcher by ancestry only)
FAKE_LAUNCHER = """
import os, subprocess, sys, time
from study import reaper
reaper.guard_private_ray(sys.argv[1])
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
subprocess.Popen(sleeper)
subprocess.Popen(sleeper, env={k: v for k, v in os.environ.items() if k != reaper.MARK_ENV})
time.sleep(600)
"""


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


def _gone_within(token: str, seconds: float) -> dict[int, str]:
    deadline = time.time() + seconds
    while (left := _processes(token)) and time.time() < deadline:
        time.sleep(0.5)
    return left


def _watcher_log(location: str) -> str:
    path = reaper.state_file(location).with_suffix(".log")
    return path.read_text() if path.exists() else "(no watcher log)"


def _fake_launcher(location: str, token: str) -> subprocess.Popen:
    """Start the stand-in launcher; return once its watcher has recorded both children."""
    p = subprocess.Popen([sys.executable, "-c", FAKE_LAUNCHER, location], cwd=REPO,
                         env={**os.environ, TOKEN_ENV: token}, start_new_session=True)
    deadline = time.time() + 60
    while not (reaper.read_state(location)[0] or "").startswith(f"{p.pid}:") or len(reaper.read_state(location)[1]) < 2:
        assert p.poll() is None and time.time() < deadline, "the stand-in launcher's children were never recorded"
        time.sleep(0.1)
    return p


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, data_root):
    """A real tiny search, its launcher SIGKILLed once a trial runs: (its folder, what was left 15 s later)."""
    tmp = tmp_path_factory.mktemp("reaper")
    out, log, token = tmp / "k", tmp / "run.log", uuid.uuid4().hex
    journal = out / "optuna" / "mnist-none.journal"
    p = subprocess.Popen(_cmd(out), cwd=REPO, env={**_env(data_root), TOKEN_ENV: token}, stdout=open(log, "w"),
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (journal.exists() and journal.stat().st_size > 0):
            assert p.poll() is None, "the run ended early:\n" + log.read_text()
            assert time.time() < deadline, "no trial started:\n" + log.read_text()
            time.sleep(0.1)
        deadline = time.time() + 60  # the trial's worker names itself ray::… once it runs (in the sequential
        while True:  # schedule, the laptop's, no search task's worker is up before it)
            ray_procs = {pid: c for pid, c in _processes(token).items() if pid != p.pid}
            if any("raylet" in c for c in ray_procs.values()) and any("ray::" in c for c in ray_procs.values()):
                break
            assert p.poll() is None and time.time() < deadline, (ray_procs, log.read_text())
            time.sleep(0.2)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        # (before the watcher: agents and python helpers for 30-60 s on this machine, 3.5 min elsewhere)
        yield out, _gone_within(token, 15)
    finally:
        _kill_all(token)


@pytest.mark.ray
def test_sigkill_of_the_launcher_takes_its_private_ray_down(killed_run):
    """SIGKILL to the launcher's pid alone: its raylet's agents and workers used to live on for minutes."""
    out, left = killed_run
    assert not left, (f"still running 15 s after the launcher was killed: {sorted(left.values())}\n"
                      f"watcher: {_watcher_log(str(out))}")


@pytest.mark.ray
def test_a_launch_stops_the_leftovers_of_a_dead_launcher_of_its_folder_first(killed_run, data_root):
    """A launcher and its watcher both SIGKILLed: a --resume on the folder stops what is left, marked or only
    recorded, and says so once."""
    out, _ = killed_run
    token = uuid.uuid4().hex
    fake = _fake_launcher(str(out), token)
    try:
        watchers = [pid for pid, c in _processes(token).items() if "study.reaper" in c]
        assert len(watchers) == 1, _processes(token)
        for pid in [fake.pid, *watchers]:
            os.kill(pid, signal.SIGKILL)
        fake.wait()
        time.sleep(1.0)
        assert len(_processes(token)) == 2, _processes(token)  # both children outlived them
        r = subprocess.run(_cmd(out, "--resume", "-q"), cwd=REPO, env=_env(data_root), capture_output=True,
                           text=True, timeout=600, start_new_session=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        said = [ln for ln in r.stdout.splitlines() if "leftover process(es) of the private Ray" in ln]
        assert len(said) == 1 and f"launcher pid {fake.pid}" in said[0] and "stopped 2 " in said[0], r.stdout[-3000:]
        assert not _processes(token), sorted(_processes(token).values())
    finally:
        _kill_all(token)


def test_the_watcher_stops_a_child_of_the_launcher_whose_environment_has_no_mark(tmp_path):
    """No Ray: a stand-in launcher SIGKILLed; both children go, the unmarked one known by ancestry only."""
    token, location = uuid.uuid4().hex, str(tmp_path / "study")
    fake = _fake_launcher(location, token)
    try:
        os.kill(fake.pid, signal.SIGKILL)
        fake.wait()
        left = _gone_within(token, 10)
        assert not left, f"{sorted(left.values())}\nwatcher: {_watcher_log(location)}"
        assert "stopped 2 process(es)" in _watcher_log(location)
        assert not reaper.state_file(location).exists()  # the watcher cleans up after itself
    finally:
        _kill_all(token)
