"""A full disk mid-search, on a real small tmpfs: one line naming the folder and "free space, then --resume"
(it was a RayTaskError traceback); nothing half-written is left for the resume to discard (Tune's
experiment state was truncated, checkpoints held 0-byte state.pt); after the space is freed, --resume
finishes the study."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from foundations import schemas as R
from tests.study.test_launch_faults import REPO, _cmd, _env


@pytest.fixture
def small_disk(tmp_path):
    """A 700 KiB tmpfs (the tiny study needs about 1.1 MB): mounting needs root."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.ray
def test_a_full_disk_ends_in_one_line_and_resume_finishes_after_freeing_space(small_disk, data_root):
    out = small_disk / "s"
    r = subprocess.run(_cmd(out, "-q"), cwd=REPO, env=_env(data_root), capture_output=True, text=True, timeout=600,
                       start_new_session=True)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text[-4000:]
    assert "Traceback" not in text and "RayTaskError" not in text, text[-4000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, text[-4000:]
    assert re.match(rf"error: {re.escape(str(out))}: no space left on the device\b.*free space, then --resume",
                    errors[0]), errors[0]
    for state in (out / "tune").glob("*/experiment_state-*.json"):
        json.loads(state.read_text())  # whole JSON, or the test fails here
    empty = [f for f in (out / "tune").glob("*/*/checkpoint_*/*") if f.stat().st_size == 0]
    assert not empty, empty

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)  # space freed
    r = subprocess.run(_cmd(out, "--resume", "-q"), cwd=REPO, env=_env(data_root), capture_output=True, text=True,
                       timeout=600, start_new_session=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = R.read_table(out, "trials")
    assert len(trials) == 4 and (trials["status"] == "ok").all() and (trials["epochs_done"] == 2).all(), trials
