"""Values the launcher must refuse before anything runs: one line `error: KEY: ...` with the valid range, exit 2,
Ray never imported, nothing written (non-finite numbers, sizes beyond the data, names and paths the filesystem
cannot hold or that leave the study folder)."""

from __future__ import annotations

import pytest

from study.config import ConfigError, load_config
from tests.ray_utils import ray_env
from tests.study.test_launch import REPO, _launch_no_ray

HUGE = "x" * 5_000_000  # a 5 MB value (from a config file)
BIG = "x" * 50_000  # two of them fit in one command-line argument (128 KiB)


@pytest.mark.parametrize(
    "override, start, hint",
    [
        ("lr=inf", "training.lr: must be a finite number > 0", "got inf"),
        ("training.lr=.nan", "training.lr: ", "got nan"),
        ("evaluation.n_samples=100000", "evaluation.n_samples: must be an integer in [1, 10000]", "test set"),
        ("evaluation.gallery_n=20000", "evaluation.gallery_n: must be an integer in [0, 10000]", "test set"),
        ("name=..", "name: must be one folder name", "valid choices:"),
        ("name=.", "name: must be one folder name", "valid choices:"),
        ("name=a/b", "name: must be one folder name", "valid choices:"),
        ("name=q*uick", "name: must be one folder name", "valid choices:"),
        (f"name={HUGE}", "name: must be one folder name", "(5000000 characters)"),
        (f"data_root={HUGE}", "data_root: path too long", "(5000000 characters)"),
        (f"data_root=/tmp/{'d' * 300}", "data_root: path too long", "at most 255"),
        (f"output=/tmp/{HUGE}", "output: path too long", "(5000005 characters)"),
    ],
    ids=["lr-inf", "lr-nan", "n-samples", "gallery-n", "name-dotdot", "name-dot", "name-slash",
         "name-star", "name-5MB", "data-root-5MB", "data-root-long-folder", "output-5MB"],
)
def test_values_the_filesystem_or_the_data_cannot_hold_are_refused(override, start, hint):
    """Each bad value is a ConfigError naming its key, short enough to read (never the 5 MB value itself)."""
    with pytest.raises(ConfigError) as e:
        load_config("quick", [override])
    msg = str(e.value)
    assert msg.startswith(start), msg[:300]
    assert hint in msg and len(msg) < 400, msg[:600]


def test_good_names_and_sizes_still_pass():
    """The checks leave ordinary values alone: dotted/dashed names, the whole test set, a normal path."""
    cfg = load_config("quick", ["name=paper-v2.1_b", "evaluation.n_samples=10000", "data_root=/tmp/data", "lr=0.5"])
    assert cfg.name == "paper-v2.1_b" and cfg.evaluation.n_samples == 10000


def test_the_launcher_refuses_them_with_one_line_before_anything_runs(tmp_path, data_root):
    """Through the CLI: exit 2, one `error:` line, no Ray, and `name=..` writes nothing into the current directory."""
    work = tmp_path / "cwd"
    work.mkdir()
    cases = [["--set", "lr=inf"], ["--set", "evaluation.n_samples=100000"], ["--set", "name=.."],
             ["--set", f"name={BIG}"], ["--set", f"data_root={BIG}"]]
    env = {**ray_env(), "SALIENCY_DATA_ROOT": str(data_root), "PYTHONPATH": str(REPO)}
    runs = _launch_no_ray(cases, env=env, cwd=work)
    for args, run in zip(cases, runs):
        lines = [ln for ln in run["stderr"].splitlines() if ln.strip()]
        assert run["rc"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args[1][:40], run["stderr"][:99])
        assert len(lines[0]) < 400, lines[0][:500]
    assert list(work.iterdir()) == []  # no config.yaml, tune/, trials/ or models/ in the current directory


def test_train_cli_refuses_an_infinite_learning_rate(capsys):
    """`python -m trainables.train --lr inf` used to train into a raw NonFiniteLossError."""
    from trainables.train import main

    rc = main(["--lr", "inf", "--epochs", "1", "--data-fraction", "0.01"])
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2 and lines == ["error: lr: must be a finite number > 0, got inf"], (rc, cap.err[-2000:])
    assert cap.out == ""


def test_a_study_whose_data_moved_is_told_how_to_point_to_it(tmp_path, data_root):
    """The saved data_root no longer holds the data: the line names `--set data_root=`, which works, before the
    `prepare --root <old path>` that would download it all again into the old place."""
    from study.config import load_config
    from study.search import check_output

    out, old = tmp_path / "study", tmp_path / "old-data"
    check_output(load_config("quick", [f"output={out}", f"data_root={old}", "datasets=[mnist]"]))  # its config.yaml
    env = {**ray_env(), "PYTHONPATH": str(REPO)}
    runs = _launch_no_ray([["--resume", "--output", str(out)]], env=env)
    lines = [ln for ln in runs[0]["stderr"].splitlines() if ln.strip()]
    assert runs[0]["rc"] == 2 and len(lines) == 1, runs[0]
    assert lines[0].startswith(f"error: data: mnist: missing {old}"), lines[0]
    assert "--set data_root=DIR" in lines[0] and lines[0].index("data_root=DIR") < lines[0].index("prepare"), lines[0]
