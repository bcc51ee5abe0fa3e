"""An operator's SIGTERM (Slurm, Kubernetes, `timeout`) to a real launcher ends a run as Ctrl-C does: one
line, exit 143, the run recorded in runs.jsonl, and ``--resume`` finishes the study."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from foundations import schemas as R
from tests.study.processes import signal_when
from tests.study.test_launch_faults import REPO, _cmd, _env


def _terminate_when_training(out: Path, env: dict, log: Path, *extra: str, group: bool) -> tuple[int, str]:
    """Start the launcher; 1 s after its first trial started send SIGTERM (to its group or its pid alone)."""
    journal = out / "optuna" / "mnist-none.journal"  # Optuna records a trial as Tune starts it
    started = lambda: journal.exists() and journal.stat().st_size > 0  # noqa: E731
    # a batch scheduler's stop (the whole process group), or `kill PID` (the launcher alone)
    send = (lambda pid: os.killpg(pid, signal.SIGTERM)) if group else (lambda pid: os.kill(pid, signal.SIGTERM))
    rc, text = signal_when(_cmd(out, *extra), env, log, started, send, settle=1.0, what="terminated")
    assert rc is not None, "the launcher did not exit within 180 s of SIGTERM:\n" + text
    return rc, text


@pytest.mark.ray
@pytest.mark.parametrize(  # the sequential schedule's interrupt: test_launch_faults' Ctrl-C in the first epoch
    "schedule, group", [("concurrent", True), ("concurrent", False)], ids=["group", "pid-alone"],
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


def test_a_ctrl_c_swallowed_while_an_extension_module_loads_still_stops_the_run():
    """Cython's module set-up (``import ray`` loads ``ray._raylet``) prints a KeyboardInterrupt as
    "Exception ignored" and goes on; the launcher's handler records it, and the next check raises it."""
    import sys
    import time
    import types

    from study import interrupts

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a launcher's: Python's own (in this
    printed = []  # suite an earlier in-process Ray may have left its handler)
    hook, sys.unraisablehook = sys.unraisablehook, printed.append  # what Python prints as "Exception ignored"
    try:
        with interrupts.sigterm_as_ctrl_c():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler runs at the next bytecode
            except KeyboardInterrupt as exc:  # what the extension module's set-up does with it: reports it
                sys.unraisablehook(types.SimpleNamespace(exc_type=KeyboardInterrupt, exc_value=exc,
                                                         exc_traceback=None, err_msg=None, object=None))
            with pytest.raises(KeyboardInterrupt):
                interrupts.raise_if_swallowed()
            sys.unraisablehook(types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError("other"),
                                                     exc_traceback=None, err_msg=None, object=None))
        assert [type(u.exc_value) for u in printed] == [ValueError]  # the Ctrl-C's traceback is not printed
        assert sys.unraisablehook == printed.append  # the hook is restored
    finally:
        sys.unraisablehook = hook
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back
    with interrupts.sigterm_as_ctrl_c():
        interrupts.raise_if_swallowed()  # the next run starts clean: entering clears the record
    seen = []
    signal.signal(signal.SIGINT, lambda *_: seen.append(1))  # another handler: recorded, then still called
    try:
        with interrupts.sigterm_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # (the handler runs at the next bytecode; this one does not raise)
            with pytest.raises(KeyboardInterrupt):
                interrupts.raise_if_swallowed()
        assert seen == [1]
    finally:
        signal.signal(signal.SIGINT, before)
