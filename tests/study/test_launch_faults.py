"""The launcher under faults a new user meets: real signals to a real run, infeasible
resources, unreachable addresses, unwritable outputs. Each test starts the launcher as a
subprocess (its own session, so the signal reaches its whole process group as Ctrl-C would)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from foundations import schemas
from tests.ray_utils import ray_env
from tests.study.processes import signal_when

REPO = Path(__file__).resolve().parents[2]

TINY = ["--set", "name=tiny", "--set", "datasets=[mnist]", "--set", "penalties=[none, gradient]",
        "--set", "trials=2", "--set", "epochs=2", "--set", "data_fraction=0.01", "--set", "val_limit=500",
        "--set", "explain_n=20"]


def _env(data_root) -> dict:
    return ray_env({**os.environ, "SALIENCY_DATA_ROOT": str(data_root)})


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "study.launch", "--stage", "search", "--output", str(out), "--num-cpus", "2",
            *TINY, *extra]


def _interrupt_when(cmd: list[str], env: dict, ready, log: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``cmd``; once ``ready()`` is true send SIGINT to its process group; its exit code and output."""
    # SIGINT as a terminal's foreground job has it: a shell's background job (`pytest &`) ignores SIGINT,
    # and a Python started with SIGINT ignored never raises KeyboardInterrupt; Ctrl-C goes to the whole group
    rc, text = signal_when(cmd, env, log, ready, lambda pid: os.killpg(pid, signal.SIGINT), timeout=timeout,
                           what="interrupted", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert rc is not None, "the launcher did not exit within 180 s of Ctrl-C:\n" + text
    return rc, text


def _assert_clean_interrupt(rc: int, text: str) -> None:
    assert rc == 130, text[-4000:]
    assert "[study] interrupted (" in text and "[study] interrupted ()" not in text, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert "Tuner.restore" not in text, text[-4000:]
    assert "[study] finished" not in text, text[-4000:]


SCHEDULES = ["sequential", "concurrent"]  # one search after the other (run_search), or all at once (study/schedule.py)


@pytest.mark.parametrize("schedule", ["sequential"])  # the concurrent one: test_signals' SIGTERM, the same handler
@pytest.mark.ray
def test_ctrl_c_in_first_epoch_loses_nothing_and_resume_finishes(tmp_path, data_root, schedule):
    """SIGINT 1 s after the first trial started -> exit 130, nothing marked done; resume finishes."""
    out = tmp_path / "int6"
    exp = out / "tune" / "mnist-none"
    journal = out / "optuna" / "mnist-none.journal"  # Optuna records a trial as Tune starts it; Tune's
    started: list[float] = []  # params.json reaches the study folder only when the trial ends (Ray 2.60)

    def ready() -> bool:
        if not started and journal.exists() and journal.stat().st_size > 0:
            started.append(time.time())
        return bool(started) and time.time() - started[0] >= 1.0

    rc, text = _interrupt_when(
        _cmd(out, "--set", f"schedule={schedule}"), _env(data_root), ready, tmp_path / "run1.log"
    )
    _assert_clean_interrupt(rc, text)
    assert not (exp / "search_done.json").exists(), text[-4000:]
    assert "[search] mnist/none" not in text, text[-4000:]  # no summary of a search that did not finish
    if schedule == "sequential":
        assert not (out / "tune" / "mnist-gradient").exists(), "went on to the next penalty after Ctrl-C"

    r = subprocess.run(
        _cmd(out, "--resume", "-q"), cwd=REPO, env=_env(data_root), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not re.search(r"mnist/none: .*\(already done\)", r.stdout), (
        r.stdout
    )  # (the concurrent gradient search may have finished)
    assert "== Status ==" not in r.stdout and "Trial name" not in r.stdout, r.stdout  # -q holds for a restored search
    assert "[search] mnist/none: 2 trials (2 ok, 0 failed)" in r.stdout, r.stdout
    trials = schemas.read_table(out, "trials")
    assert len(trials) == 4 and (trials["status"] == "ok").all() and (trials["epochs_done"] == 2).all()
    assert sorted(schemas.read_table(out, "selected")["penalty"]) == ["gradient", "none"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.ray
def test_ctrl_c_while_trials_start_prints_the_launchers_line(tmp_path, data_root, schedule):
    """SIGINT while the trials are still starting: once Tune shows its first status table
    (all PENDING), or, with the concurrent schedule (no Tune table), once the search's folder exists."""
    out = tmp_path / "start"
    exp = out / "tune" / "mnist-none"
    log = tmp_path / "run.log"
    ready = (lambda: "PENDING" in log.read_text()) if schedule == "sequential" else exp.exists
    rc, text = _interrupt_when(_cmd(out, "--set", f"schedule={schedule}"), _env(data_root), ready, log)
    _assert_clean_interrupt(rc, text)
    assert not (exp / "search_done.json").exists()


@pytest.mark.ray
def test_ctrl_c_while_ray_starts_names_the_interrupt(tmp_path, data_root):
    """`[study] interrupted ()` -- a Ctrl-C before any search still says what happened."""
    out = tmp_path / "early"
    log = tmp_path / "run.log"
    rc, text = _interrupt_when(_cmd(out), _env(data_root), lambda: "[study] tiny:" in log.read_text(), log)
    _assert_clean_interrupt(rc, text)


def test_summary_line_never_counts_stopped_trials_as_ok():
    """`stopped` (ASHA's early stop) is reported as such, never as ok."""

    from study.search import summary_line

    t = pd.DataFrame(
        {
            "dataset": "mnist",
            "penalty": "none",
            "status": ["ok", "stopped", "error"],
            "val_acc": [0.9, 0.5, float("nan")],
            "val_morf": [0.3, 0.2, float("nan")],
        }
    )
    line = summary_line(t, 1.0)
    assert "3 trials (1 ok, 1 stopped early, 1 failed)" in line, line


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "resources.cpu=4",
            "error: resources.cpu: each trial asks for 4 CPU, but no node of this Ray cluster has more than 2",
        ),
        (
            "resources.gpu=0.25",
            "error: resources.gpu: each trial asks for 0.25 GPU, but no node of this Ray cluster has more than 0",
        ),
    ],
)
@pytest.mark.ray
def test_infeasible_resources_stop_with_one_line(tmp_path, data_root, override, message):
    """A trial no node can hold used to stay PENDING forever; now one line, exit 2."""
    cmd = _cmd(tmp_path / "o", "--num-gpus", "0", "--set", override)
    try:
        r = subprocess.run(
            cmd, cwd=REPO, env=_env(data_root), capture_output=True, text=True, timeout=180, start_new_session=True
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"still waiting after 180 s (trials PENDING forever):\n{exc.stdout}")
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(message) and "valid choices:" in err[0], r.stderr
    assert "PENDING" not in r.stdout and not (tmp_path / "o" / "tune" / "mnist-none").exists()


@pytest.mark.ray
def test_a_cluster_that_may_grow_gets_a_warning_after_the_wait(monkeypatch):
    """With workers on their way the launcher waits (configurable), warns, and goes on."""
    from study import resources
    from study.resources import EXPECT_WORKERS_ENV
    from study.config import ConfigError, load_config
    from tests.ray_utils import start_local_ray

    import ray

    cfg = load_config("quick", ["resources.cpu=3"])
    start_local_ray(num_cpus=2)
    try:
        with pytest.raises(ConfigError, match="resources.cpu: each trial asks for 3 CPU"):
            resources.check_resources(cfg, None)  # a private local Ray never grows
        lines: list[str] = []
        monkeypatch.setenv(EXPECT_WORKERS_ENV, "1")
        resources.check_resources(cfg, "auto", log=lines.append, wait_s=0.5)
        assert len(lines) == 1 and lines[0].startswith("[study] warning: still no node for a trial after 0.5 s"), lines
        resources.check_resources(load_config("quick", ["resources.cpu=2"]), "auto", log=lines.append, wait_s=0.5)
        assert len(lines) == 1  # a request that fits: nothing said
        # the cluster file's node types came with the job: if none of them fits, waiting cannot help
        from study.cluster import NODE_TYPES_ENV

        monkeypatch.setenv(NODE_TYPES_ENV, '{"head": {"CPU": 2}, "worker": {"CPU": 2}}')
        t0 = time.monotonic()
        never = "resources.cpu: each trial asks for 3 CPU, but no node type of the cluster"
        with pytest.raises(ConfigError, match=never):
            resources.check_resources(cfg, "auto", log=lines.append, wait_s=30)
        assert time.monotonic() - t0 < 10 and len(lines) == 1
        monkeypatch.setenv(NODE_TYPES_ENV, '{"head": {"CPU": 2}, "worker": {"CPU": 8}}')  # a worker type fits: wait
        resources.check_resources(cfg, "auto", log=lines.append, wait_s=0.5)
        assert len(lines) == 2 and lines[1].startswith("[study] warning: still no node for a trial after 0.5 s")
    finally:
        ray.shutdown()


def test_unwritable_output_is_one_line_before_ray(tmp_path, data_root):
    """An existing file, a path through a file, /proc/x, an unwritable /sys path: exit 2, one line,
    no Ray."""
    from tests.study.test_launch import _launch_no_ray

    (tmp_path / "file").write_text("x")
    cases = [
        (str(tmp_path / "file"), "is a file, not a folder"),
        (str(tmp_path / "file" / "study"), "is a file, not a folder"),
        ("/proc/x", "error: output: cannot write to /proc/x ("),
        ("/sys/saliency-study", "error: output: cannot write to /sys/saliency-study ("),
    ]
    env = {**ray_env(), "SALIENCY_DATA_ROOT": str(data_root)}
    runs = _launch_no_ray([["--output", out, "--set", "datasets=[mnist]"] for out, _ in cases], env=env)
    for (out, message), run in zip(cases, runs):
        assert run["rc"] == 2, (out, run)
        lines = [ln for ln in run["stderr"].splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: output: ") and message in lines[0], (out, run["stderr"])
        assert "valid choices:" in lines[0]


def test_unreachable_address_fails_at_once_with_one_line(tmp_path, data_root):
    """`--address 127.0.0.1:1` hung (GCS retries), `http://` took 90 s: now one line, exit 2, no Ray."""
    from tests.study.test_launch import _launch_no_ray

    cases = [
        ("127.0.0.1:1", "error: --address: nothing answers at 127.0.0.1:1 ("),
        ("ray://127.0.0.1:1", "error: --address: nothing answers at 127.0.0.1:1 ("),
        ("http://127.0.0.1:1", "error: --address: no Ray job server answers at http://127.0.0.1:1 ("),
        ("127.0.0.1:notaport", "error: --address: cannot read '127.0.0.1:notaport'"),
    ]
    env = {**ray_env(), "SALIENCY_DATA_ROOT": str(data_root)}
    runs = _launch_no_ray([["--address", a, "--output", str(tmp_path / "o")] for a, _ in cases], env=env)
    for (address, message), run in zip(cases, runs):
        assert run["rc"] == 2, (address, run)
        lines = [ln for ln in run["stderr"].splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(message) and "valid choices:" in lines[0], (address, run)


def test_smoke_test_keeps_explicit_sets_and_resume_finds_it(tmp_path, monkeypatch, data_root):
    """`--smoke-test --set epochs=3` trained 1 epoch; `--smoke-test --resume` looked in outputs/quick."""
    from study.launch import parse_args, resolve_config
    from study.search import check_output

    monkeypatch.chdir(tmp_path)  # the default output folder outputs/<name> is relative to here
    cfg = resolve_config(parse_args(["--smoke-test", "--set", "epochs=3", "--set", "val_limit=100"]))
    assert (cfg.training.epochs, cfg.training.val_limit, cfg.search.trials, cfg.training.data_fraction) == (
        3,
        100,
        2,
        0.01,
    )  # --set wins, the rest shrinks
    assert cfg.name == "quick-smoke" and cfg.datasets == ["mnist"] and cfg.penalties == ["none", "gradient"]
    assert cfg.location == str(tmp_path / "outputs" / "quick-smoke")
    check_output(cfg)  # what a smoke run writes first
    resumed = resolve_config(parse_args(["--smoke-test", "--resume", "--set", "epochs=3", "--set", "val_limit=100"]))
    assert resumed.location == cfg.location and resumed.search_key() == cfg.search_key()


def test_a_different_study_in_the_output_folder_points_to_resume_first(tmp_path, data_root):
    """The error advised deleting the folder; it names the differing keys and --resume first."""
    from tests.study.test_launch import _launch_no_ray

    from study.config import load_config
    from study.search import check_output

    out = tmp_path / "old"
    check_output(load_config("quick", [f"output={out}"]))
    (run,) = _launch_no_ray(
        [["--output", str(out), "--set", "trials=5", "--set", "epochs=2"]],
        env={**ray_env(), "SALIENCY_DATA_ROOT": str(data_root)},
    )
    assert run["rc"] == 2, run
    (line,) = [ln for ln in run["stderr"].splitlines() if ln.strip()]
    assert line.startswith(f"error: output: {out} holds study 'quick' searched with different settings"), line
    assert "epochs: 1 -> 2" in line and "trials: 2 -> 5" in line, line
    assert line.index("--resume") < line.index("another --output") < line.index("delete"), line


@pytest.mark.parametrize("module", ["study.analysis", "study.report", "study.publish"])
def test_module_help_and_a_missing_study(module, tmp_path):
    """Each reading command explains itself with --help and refuses a missing study in one line, exit 2."""
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith(f"usage: python -m {module}"), r.stdout + r.stderr
    args = [str(tmp_path / "nothing")] + ([str(tmp_path / "page.md")] if module == "study.publish" else [])
    r = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=ray_env()
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stdout + r.stderr
    assert "nothing" in lines[0]


def test_a_study_without_the_none_baseline_is_warned_about(tmp_path, data_root):
    """Without `none` the selection has no baseline (NaN) and calls everything within tolerance."""
    from tests.study.test_launch import _launch_no_ray

    from study.config import load_config
    from study.search import check_output

    out = tmp_path / "old"
    check_output(load_config("quick", [f"output={out}"]))  # stops the run below before Ray, after validation
    runs = _launch_no_ray(
        [
            ["--output", str(out), "--set", "penalties=[gradient]"],
            ["--output", str(out), "--set", "penalties=[none, gradient]"],
        ],
        env={**ray_env(), "SALIENCY_DATA_ROOT": str(data_root)},
    )
    lines = [ln for ln in runs[0]["stderr"].splitlines() if ln.strip()]
    assert lines[0].startswith("warning: penalties: no `none` baseline: selection has no baseline accuracy"), lines
    assert runs[0]["rc"] == 2 and lines[1].startswith("error: output:")  # the run itself goes on to its next check
    assert "warning" not in runs[1]["stderr"], runs[1]["stderr"]
