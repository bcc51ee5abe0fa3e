"""The progress line's search ETA: the timing profile's search lengths, corrected by the searches done so far,
laid on the searches that run at once; checked on cases worked out by hand (no Ray)."""

from __future__ import annotations

import math

import pytest

from study.progress import predicted_searches, search_eta
from tests.study.test_simulate import sim_config, write_profile
from trainables.simulated import trial_seconds


def test_eta_lays_the_remaining_searches_longest_first_on_the_lanes():
    predicted = {"a": 100.0, "b": 100.0, "c": 50.0}
    # a has run 30 s (70 left); b (100) goes to the free lane, c (50) after a: 70 + 50 = 120
    assert search_eta(predicted, {}, {"a": 30.0}, ["b", "c"], lanes=2) == pytest.approx(120.0)
    assert search_eta(predicted, {}, {}, ["a", "b", "c"], lanes=1) == pytest.approx(250.0)
    assert search_eta(predicted, {}, {"a": 500.0}, [], lanes=1) == 0.0  # overdue: nothing predicted left


def test_eta_scales_the_profile_by_what_the_finished_searches_took():
    predicted = {"x": 100.0, "y": 40.0, "z": 10.0}
    # x took 200 s for a predicted 100: the profile is 2x fast here, so y and z take 80 and 20
    assert search_eta(predicted, {"x": 200.0}, {}, ["y", "z"], lanes=1) == pytest.approx(100.0)
    assert search_eta(predicted, {"x": 200.0}, {"y": 30.0}, ["z"], lanes=2) == pytest.approx(50.0)


def test_eta_without_a_prediction_for_every_search_is_none():
    assert search_eta({}, {}, {}, ["a"], lanes=1) is None
    assert search_eta({"a": 1.0}, {}, {}, ["a", "b"], lanes=1) is None


def test_predicted_search_lengths_are_trial_lengths_at_the_concurrency_limit(tmp_path):
    prof = write_profile(tmp_path / "p.yaml", epoch_seconds=2.0)
    cfg = sim_config(tmp_path / "s", prof, scale=0.5)  # 3 trials, 2 at once: 2 trial lengths per search
    got = predicted_searches(cfg)
    assert set(got) == {(d, p) for d in cfg.datasets for p in cfg.penalties}
    for (d, p), secs in got.items():  # and the first wave's fresh actors start (0.2 s)
        assert secs == pytest.approx((math.ceil(3 / 2) * trial_seconds(cfg, d, p) + 0.2) * 0.5)
    # start + 2 epochs of 2 s, twice, and one actor start, x 0.5
    assert got["mnist", "none"] == pytest.approx((2 * (0.1 + 2 * 2.0) + 0.2) * 0.5)


def test_a_real_run_predicts_from_the_committed_profile_and_an_unreadable_one_gives_none(tmp_path):
    from study.config import load_config

    assert all(v > 0 for v in predicted_searches(load_config("quick")).values())
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: nope\n")
    assert predicted_searches(sim_config(tmp_path / "s", bad)) == {}


@pytest.mark.ray
def test_the_sequential_schedule_prints_an_eta_after_each_search(tmp_path, data_root):
    """One line per finished search, with the searches left's ETA from the profile (none after the last): a laptop
    runs the sequential schedule and sees the same ETA as the concurrent one's progress line."""
    import re
    from dataclasses import replace

    import ray

    from study import search
    from tests.ray_utils import start_local_ray

    cfg = sim_config(tmp_path / "s", write_profile(tmp_path / "p.yaml", epoch_seconds=0.3), "sequential")
    cfg = replace(cfg, datasets=["mnist"])
    lines: list[str] = []
    start_local_ray(num_cpus=2)
    try:
        search.run_search(cfg, verbose=0, log=lines.append)
    finally:
        ray.shutdown()
    done = [ln for ln in lines if " search done | " in ln]
    assert [ln.split()[1] for ln in done] == ["mnist/none", "mnist/gradient", "mnist/locality"]
    etas = [re.search(r"search ETA ~(\d+) s", ln) for ln in done]
    assert etas[0] and etas[1] and etas[2] is None, done
    # two searches of the same predicted length are left after the first, one after the second
    assert float(etas[1].group(1)) < float(etas[0].group(1))
    assert "searches 3/3 done" in done[-1]
