"""A torn last record of an Optuna journal (what a crash during a write leaves) is repaired with one printed
line and a kept copy; other damage is refused naming the file. The torn tail comes from a real SIGKILL of a
real launcher mid-search plus half a record appended, as a crash mid-write leaves it; before the repair the
resumed search's journal was never written again (its trials stayed RUNNING)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.study.test_launch_faults import REPO, _cmd, _env

SEQ = ["--set", "schedule=sequential"]


def _states(path) -> list[str]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    st = JournalStorage(JournalFileBackend(str(path)))
    (name,) = optuna.get_all_study_names(st)
    return sorted(t.state.name for t in optuna.load_study(study_name=name, storage=st).trials)


@pytest.mark.ray
def test_a_torn_journal_after_sigkill_is_repaired_and_the_resumed_search_records_its_trials(tmp_path, data_root):
    out = tmp_path / "torn"
    journal = out / "optuna" / "mnist-none.journal"
    log = tmp_path / "run1.log"
    with open(log, "w") as f:
        p = subprocess.Popen(_cmd(out, *SEQ), cwd=REPO, env=_env(data_root), stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (journal.exists() and journal.read_bytes().count(b"\n") >= 3):  # trials under way
            assert p.poll() is None, log.read_text()
            assert time.time() < deadline, "no trial started:\n" + log.read_text()
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    lines = journal.read_bytes().splitlines(keepends=True)
    with open(journal, "ab") as f:
        f.write(lines[-1][: len(lines[-1]) // 2])  # half a record: a write cut by the crash
    r = subprocess.run(_cmd(out, *SEQ, "--resume", "-q"), cwd=REPO, env=_env(data_root), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    said = [ln for ln in r.stdout.splitlines() if "dropped a torn last record" in ln]
    assert len(said) == 1 and str(journal) in said[0], r.stdout
    assert len(list(journal.parent.glob("mnist-none.journal.torn-*"))) == 1
    assert _states(journal) == ["COMPLETE", "COMPLETE"], "the resumed search's trials were not recorded"


def test_damage_that_is_not_a_torn_tail_is_refused_naming_the_file(tmp_path):
    from study import journal

    d = journal.journal_dir(tmp_path)
    d.mkdir(parents=True)
    f = d / "mnist-none.journal"
    f.write_bytes(b'{"op_code": 0}\n{"op_co\n{"op_code": 1}\n')
    before = f.read_bytes()
    with pytest.raises(journal.JournalDamaged, match=rf"{f}: line 2 is not a journal record"):
        journal.repair_journals(tmp_path)
    assert f.read_bytes() == before and list(d.iterdir()) == [f]  # refused: nothing changed


def test_a_torn_tail_is_dropped_and_the_damaged_file_kept(tmp_path):
    from study import journal

    d = journal.journal_dir(tmp_path)
    d.mkdir(parents=True)
    f = d / "mnist-none.journal"
    f.write_bytes(b'{"op_code": 0}\n{"op_code": 1}\n{"op_co')
    said: list[str] = []
    assert journal.repair_journals(tmp_path, said.append) == 1
    assert f.read_bytes() == b'{"op_code": 0}\n{"op_code": 1}\n' and len(said) == 1 and "7 bytes" in said[0]
    (copy,) = d.glob("mnist-none.journal.torn-*")
    assert copy.read_bytes().endswith(b'{"op_co')
    assert journal.repair_journals(tmp_path, said.append) == 0  # a sound journal is left alone
