"""An operator's SIGTERM (Slurm, Kubernetes, `timeout`) to a real launcher ends a run as Ctrl-C does: one
line, exit 143, the run recorded in runs.jsonl, and ``--resume`` finishes the study."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from foundations import schemas as R
from tests.study.test_launch_faults import REPO, _cmd, _env


def _terminate_when_training(out: Path, env: dict, log: Path, *extra: str, group: bool) -> tuple[int, str]:
    """Start the launcher; 1 s after its first trial started send SIGTERM (to its group or its pid alone)."""
    journal = out / "optuna" / "mnist-none.journal"  # Optuna records a trial as Tune starts it
    with open(log, "w") as f:
        p = subprocess.Popen(_cmd(out, *extra), cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            deadline, started = time.time() + 300, None
            while started is None or time.time() - started < 1.0:
                assert p.poll() is None, "the run ended before it could be terminated:\n" + log.read_text()
                assert time.time() < deadline, "timed out waiting for a trial:\n" + log.read_text()
                if started is None and journal.exists() and journal.stat().st_size > 0:
                    started = time.time()
                time.sleep(0.05)
            if group:
                os.killpg(p.pid, signal.SIGTERM)  # a batch scheduler's stop: the whole process group
            else:
                os.kill(p.pid, signal.SIGTERM)  # `kill PID`: the launcher alone
            try:
                rc = p.wait(timeout=180)
            except subprocess.TimeoutExpired:
                rc = None
        finally:
            try:  # whatever is left of that run goes too, so that no two Rays overlap
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = log.read_text()
    assert rc is not None, "the launcher did not exit within 180 s of SIGTERM:\n" + text
    return rc, text


@pytest.mark.ray
@pytest.mark.parametrize(
    "schedule, group", [("concurrent", True), ("concurrent", False), ("sequential", True)],
    ids=["group", "pid-alone", "sequential-group"],
)
def test_sigterm_ends_like_ctrl_c_and_resume_finishes(tmp_path, data_root, schedule, group):
    """SIGTERM while a trial trains: exit 143 with one `interrupted (SIGTERM)` line as the output's end,
    no traceback or abort, an "interrupted" line in runs.jsonl; then --resume finishes every trial."""
    out = tmp_path / "term"
    rc, text = _terminate_when_training(out, _env(data_root), tmp_path / "run1.log", "--set", f"schedule={schedule}",
                                        group=group)
    assert rc == 143, f"exit {rc}:\n" + text[-4000:]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert re.fullmatch(r"\[study\] interrupted \(SIGTERM[^)]*\); rerun the same command to continue", lines[-1]), (
        text[-4000:])
    assert sum("[study] interrupted" in ln for ln in lines) == 1, text[-4000:]
    assert "Traceback" not in text and "SIGABRT" not in text and "*** " not in text, text[-4000:]
    runs = [json.loads(ln) for ln in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in runs] == ["interrupted"], runs
    assert not (out / "tune" / "mnist-none" / "search_done.json").exists()

    r = subprocess.run(_cmd(out, "--resume", "-q"), cwd=REPO, env=_env(data_root), capture_output=True, text=True,
                       timeout=600, start_new_session=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = R.read_table(out, "trials")
    assert len(trials) == 4 and (trials["status"] == "ok").all() and (trials["epochs_done"] == 2).all(), trials
    assert [json.loads(ln)["status"] for ln in (out / "runs.jsonl").read_text().splitlines()] == [
        "interrupted", "finished"]
