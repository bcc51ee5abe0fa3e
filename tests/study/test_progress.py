"""The concurrent schedule's progress line names each running trial's epochs done of planned and an ETA from
the epochs so far (a long trial used to print the same line again and again), on a real local Ray."""

from __future__ import annotations

import re

import pytest

from study import schedule
from study.config import load_config
from study.progress import describe


@pytest.mark.ray
def test_progress_lines_show_the_running_trials_epochs_and_eta(ray_local, tmp_path, data_root):
    cfg = load_config("quick", [
        f"output={tmp_path / 'p'}", f"data_root={data_root}", "datasets=[mnist]", "penalties=[none]", "trials=2",
        "epochs=3", "data_fraction=0.05", "val_limit=300", "explain_n=20", "scheduler=fifo", "max_concurrent_trials=2",
    ])
    logs: list[str] = []
    schedule.run_study(cfg, evaluate=False, log=logs.append, progress_every=0.5)
    lines = [ln for ln in logs if ln.startswith("[study] progress |")]
    pattern = r"trials: mnist/none#\w+ [12]/3 epochs, ETA ~\d+ s"
    assert any(re.search(pattern, ln) for ln in lines), "\n".join(lines[-20:])
    done = [ln for ln in logs if "mnist/none search done" in ln]
    assert done and "trials:" not in done[0], done  # a finished search's trials are gone from the line


def test_describe_names_a_few_trials_and_counts_the_rest():
    """The ETA is the remaining epochs at the mean epoch time; none before the first epoch ends."""
    text = describe([("mnist/none#a", 1, 4, 30.0), ("mnist/none#b", 0, 4, 0.0), ("mnist/gradient#c", 2, 4, 10.0)],
                    most=2)
    assert text == "; trials: mnist/none#a 1/4 epochs, ETA ~90 s, mnist/none#b 0/4 epochs, 1 more", text
    assert describe([]) == ""
