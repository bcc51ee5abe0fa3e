"""The launcher: clear errors without Ray; SIGKILL the driver mid-study and resume exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from foundations import schemas
from tests.ray_utils import ray_env
from tests.study.processes import result_lines, sigkill, signal_when

REPO = Path(__file__).resolve().parents[2]

# Runs main() on each argument list in one fresh interpreter (imports are the slow part), captures
# each exit code and stderr, and records whether Ray was ever imported (then it cannot have started).
DRIVER = """
import contextlib, io, json, sys
from study.launch import main
out = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as so:
        try:
            rc = main(args)
        except SystemExit as e:  # argparse
            rc = e.code
    out.append({"rc": rc, "stderr": err.getvalue(), "stdout": so.getvalue()})
print(json.dumps({"runs": out, "ray_imported": "ray" in sys.modules}))
"""


def _launch_no_ray(arg_lists: list[list[str]], env: dict | None = None, cwd: Path = REPO) -> list[dict]:
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(arg_lists)], cwd=cwd, env=env or ray_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert not res["ray_imported"], "the launcher imported Ray before rejecting its input"
    return res["runs"]


BAD = [
    (["--set", "trials=-1"], "error: search.trials: must be an integer >= 1, got -1"),
    (["--set", "datasets=[cifar10]"], "error: datasets: unknown value 'cifar10'; valid choices: mnist, fashion-mnist"),
    (["--set", "penalties=[]"], "error: penalties: must not be empty"),
    (["--set", "space.gradient.lam=[1, 0.1]"], "error: search.space.gradient.lam: low must be < high"),
    (["--set", "epochz=1"], "error: epochz: unknown key; valid keys:"),
    (["--set", "trials"], "expected KEY=VALUE"),
    (["--config", "no/such.yaml"], "error: config file 'no/such.yaml' not found; presets: quick, paper, full"),
    (["--stage", "report"], "argument --stage: invalid choice: 'report'"),
    (["--local", "--address", "auto"], "argument --address: not allowed with argument --local"),
]


def test_bad_input_exits_nonzero_with_clear_error_without_ray(tmp_path, data_root):
    from study.config import load_config
    from study.search import check_output

    check_output(load_config("quick", [f"output={tmp_path / 'old'}"]))  # an existing study folder
    cases = [(["--output", str(tmp_path / "o"), *a], m) for a, m in BAD] + [
        (["--resume", "--output", str(tmp_path / "none")], "error: --resume: no study to resume in"),
        (["--output", str(tmp_path / "old"), "--set", "trials=5"], "trials: 2 -> 5"),
    ]
    runs = _launch_no_ray([a for a, _ in cases])
    for (args, message), run in zip(cases, runs):
        assert run["rc"] == 2, (args, run)
        assert message in run["stderr"], (args, run["stderr"])
        assert "Traceback" not in run["stderr"] and "Ray up" not in run["stdout"]
    assert not (tmp_path / "o").exists()  # nothing written either
    (run,) = _launch_no_ray(
        [["--set", "datasets=[mnist]"]], env={**ray_env(), "SALIENCY_DATA_ROOT": str(tmp_path / "nodata")}
    )
    assert run["rc"] == 2 and "error: data: mnist: missing" in run["stderr"], run


@pytest.mark.ray
def test_sigkill_driver_then_resume_finishes_without_rerunning(tmp_path, data_root):
    """3 trials of 2 epochs, 2 at once; SIGKILL the driver once one trial has finished; rerun."""
    out = tmp_path / "study"
    cmd = [
        sys.executable,
        "-m",
        "study.launch",
        "--stage",
        "search",
        "--output",
        str(out),
        "-q",
        "--num-cpus",
        "2",
        "--set",
        "name=resume",
        "--set",
        "datasets=[mnist]",
        "--set",
        "penalties=[none]",
        "--set",
        "trials=3",
        "--set",
        "epochs=2",
        "--set",
        "data_fraction=0.05",
        "--set",
        "val_limit=1000",
        "--set",
        "explain_n=50",
    ]
    env = ray_env({**os.environ, "SALIENCY_DATA_ROOT": str(data_root)})
    exp = out / "tune" / "mnist-none"
    finished_one = lambda: any(lines[-1]["epoch"] == 2 for lines in result_lines(exp).values())  # noqa: E731
    # 1 s more: Tune snapshots its state at every checkpoint
    signal_when(cmd, env, tmp_path / "run1.log", finished_one, sigkill, settle=1.0, wait=30, what="killed")
    before = result_lines(exp)
    finished = {t: lines for t, lines in before.items() if lines[-1]["epoch"] == 2}
    assert finished and not (exp / "search_done.json").exists()

    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[search] mnist/none: 3 trials (3 ok, 0 failed)" in r.stdout and "selected models:" in r.stdout

    trials = schemas.read_table(out, "trials").set_index("trial_id")
    epochs = schemas.read_table(out, "epochs")
    assert len(trials) == 3 and (trials["status"] == "ok").all() and (trials["epochs_done"] == 2).all()
    assert len(epochs) == 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    # no trial added or started again: one folder per configured trial, the same ids
    assert sorted(d.name for d in exp.iterdir() if d.is_dir()) == sorted(trials.index)
    assert set(before) <= set(trials.index)
    for trial_id, lines in before.items():  # trials that had reported kept their first start
        assert abs(trials.loc[trial_id, "start_time"].timestamp() - lines[0]["start_time"]) < 1e-3
    for trial_id, lines in finished.items():  # finished trials were not retrained: same records
        rows = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        assert rows["train_seconds"].tolist() == [x["train_seconds"] for x in lines[:2]]
        assert [t.timestamp() for t in rows["end_time"]] == pytest.approx([x["end_time"] for x in lines[:2]], abs=1e-3)
    assert len(schemas.read_table(out, "selected")) == 1
