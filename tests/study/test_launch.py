"""The launcher: clear errors without Ray; SIGKILL the driver mid-study and resume exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from tests.ray_utils import ray_env

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
