"""An unreadable search table stops a launch before anything runs with one line naming the file and what
to do (it used to end in a raw `ArrowInvalid ... magic bytes not found` traceback); doing what it says
brings the study back. Real launchers on a really searched tiny study, a Parquet file truncated on disk."""

from __future__ import annotations

import subprocess

import pytest

from foundations import schemas as R
from tests.study.test_launch_faults import REPO, _cmd, _env

SEQ = ["--set", "schedule=sequential"]


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.ray
def test_a_truncated_search_table_is_named_in_one_line_and_the_advice_brings_it_back(tmp_path, data_root):
    out = tmp_path / "study"
    run = dict(cwd=REPO, env=_env(data_root), capture_output=True, text=True, timeout=900)
    r = subprocess.run(_cmd(out, *SEQ, "-q"), **run)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = R.read_table(out, "trials")

    (victim,) = (out / "trials" / "dataset=mnist" / "penalty=none").glob("*.parquet")
    _truncate(victim)
    r = subprocess.run(_cmd(out, *SEQ, "--resume", "-q"), **run)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: trials: {victim}: not a readable Parquet file"), r.stderr
    done = out / "tune" / "mnist-none" / "search_done.json"
    assert f"delete it and {done}, then rerun with --resume" in err[0], err
    assert "Traceback" not in r.stderr and "[study] Ray up" not in r.stdout

    victim.unlink()  # what the line says
    done.unlink()
    r = subprocess.run(_cmd(out, *SEQ, "--resume", "-q"), **run)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    again = R.read_table(out, "trials")
    assert sorted(again["trial_id"]) == sorted(trials["trial_id"]) and (again["status"] == "ok").all()

    (sel,) = (out / "selected").rglob("*.parquet")
    _truncate(sel)
    r = subprocess.run([*_cmd(out, "--resume"), "--stage", "evaluate"], **run)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: selected: {sel}: not a readable Parquet file"), r.stderr
    assert "--resume --stage search" in err[0]
