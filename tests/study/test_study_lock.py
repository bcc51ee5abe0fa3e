"""One run per study folder: a second launch on a folder a running launch holds exits 2 with one line
naming the owner (it used to restore the first run's Tune experiment and drive the same trials). Two real
launchers (the first in its own session, as tests/study/test_launch_faults.py starts them); the object-store
lease against a real S3 server (moto, as tests/cluster uses it: the one thing that cannot exist here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.study.test_launch_faults import REPO, _cmd, _env

SEQ = ["--set", "schedule=sequential"]  # one search at a time: the least memory for two launches at once


@pytest.mark.ray
def test_a_second_launch_on_a_running_studys_folder_exits_2_naming_the_owner(tmp_path, data_root):
    out = tmp_path / "two"
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        first = subprocess.Popen(_cmd(out, *SEQ), cwd=REPO, env=_env(data_root), stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 300
        while not (out / "tune" / "mnist-none").exists():  # the first launch is searching
            assert first.poll() is None, log.read_text()
            assert time.time() < deadline, "the first launch never started its search:\n" + log.read_text()
            time.sleep(0.1)
        time.sleep(2)
        try:
            r = subprocess.run(_cmd(out, *SEQ), cwd=REPO, env=_env(data_root), capture_output=True, text=True,
                               timeout=240, start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"the second launch ran beside the first instead of refusing:\n{exc.stdout}")
        assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith(f"error: output: {out} is in use by another run"), r.stderr
        assert f"pid {first.pid}" in err[0] and "valid choices:" in err[0], err
        assert "[study] Ray up" not in r.stdout, r.stdout  # refused before anything ran
        assert first.poll() is None, "the first launch was disturbed:\n" + log.read_text()
    finally:
        try:
            os.killpg(first.pid, signal.SIGINT)
            first.wait(timeout=180)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    from study import lock

    lock.acquire(str(out))  # the first launch ended: the folder is free again
    lock.release_all()


def test_a_held_folder_lock_is_refused_and_released(tmp_path):
    from study import lock

    held = lock.acquire(str(tmp_path))
    p = subprocess.run(["python", "-c", f"from study import lock; lock.acquire({str(tmp_path)!r})"], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode != 0 and "StudyBusy" in p.stderr and f"pid {os.getpid()}" in p.stderr, p.stderr
    held.release()
    lock._HELD.clear()
    p = subprocess.run(["python", "-c", f"from study import lock; lock.acquire({str(tmp_path)!r})"], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr


def test_an_object_store_lease_is_refused_while_its_owner_runs_and_taken_over_when_it_is_gone(tmp_path,
                                                                                             monkeypatch):
    from foundations import storage
    from study import lock
    from tests.cluster import helpers as H

    s3 = H.start_s3(tmp_path)
    try:
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        loc = f"s3://{s3.bucket}/studies/leased"
        first = lock.acquire(loc)
        with pytest.raises(lock.StudyBusy, match=rf"pid {os.getpid()}.*delete {loc}/\.lease\.json"):
            lock.Lease(loc).acquire()
        first.release()
        lock._HELD.clear()
        assert not storage.exists(f"{loc}/{lock.LEASE_FILE}")
        dead = subprocess.Popen(["true"])
        dead.wait()  # a pid of this host that no longer runs
        import platform

        storage.write_text(f"{loc}/{lock.LEASE_FILE}", json.dumps({"host": platform.node(), "pid": dead.pid,
                                                                   "renewed": time.time()}))
        logs: list[str] = []
        taken = lock.Lease(loc, logs.append)
        taken.acquire()
        assert any("taking over the lease" in m and f"pid {dead.pid}" in m for m in logs), logs
        far = {"host": "another-host", "pid": 1, "renewed": time.time()}
        storage.write_text(f"{loc}/{lock.LEASE_FILE}", json.dumps(far))  # a live owner elsewhere
        with pytest.raises(lock.StudyBusy, match="another-host"):
            lock.Lease(loc).acquire()
        storage.write_text(f"{loc}/{lock.LEASE_FILE}", json.dumps({**far, "renewed": time.time() - 3600}))
        lock.Lease(loc).acquire()  # not renewed for an hour: its owner is gone
        taken._stop.set()
    finally:
        s3.stop()
