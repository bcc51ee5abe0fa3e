"""Shared fixtures: real prepared data (``make data``), a small really-trained model.

Ray fixtures live in the test modules that need them (one local Ray per module, ``num_cpus``
pinned, dashboard off), see ``tests/ray_utils.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from foundations import data as data_mod
from tests.ray_utils import start_local_ray

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# `make test-fast` runs `pytest -m "not ray and not slow"`. A test is marked `ray` when it uses the
# ray_local fixture, lies under one of RAY_PATHS, or is named in RAY_TESTS (tests that start Ray or
# the launcher in a subprocess, or fetch packages). Mark a new such test with @pytest.mark.ray.
RAY_PATHS = ("tests/cluster/", "tests/evaluation/test_stage_cluster.py")
RAY_TESTS = (
    "tests/study/test_launch.py::test_sigkill_driver_then_resume_finishes_without_rerunning",
    "tests/study/test_launch_faults.py::test_ctrl_c_",
    "tests/study/test_launch_faults.py::test_a_search_marked_done_by_the_old_interrupt_bug_is_searched_again",
    "tests/study/test_launch_faults.py::test_infeasible_resources_stop_with_one_line",
    "tests/study/test_launch_faults.py::test_a_cluster_that_may_grow_gets_a_warning_after_the_wait",
    "tests/study/test_data.py::test_offline_prepare_from_scratch",
)


def pytest_collection_modifyitems(config, items):
    root = Path(str(config.rootpath))
    for item in items:
        rel = Path(str(item.path)).resolve().relative_to(root).as_posix() if item.path else ""
        nodeid = rel + item.nodeid[item.nodeid.find("::"):] if "::" in item.nodeid else rel
        if "ray_local" in item.fixturenames or rel.startswith(RAY_PATHS) or nodeid.startswith(RAY_TESTS):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = data_mod.default_root()
    for name in data_mod.DATASETS:
        if not data_mod.is_prepared(root, name):
            pytest.fail(f"{name} is not prepared under {root}: run `make data` (or set SALIENCY_DATA_ROOT)")
    return root


@pytest.fixture(scope="session")
def mnist(data_root) -> data_mod.Splits:
    return data_mod.load("mnist", data_root)


@pytest.fixture(scope="session")
def fashion(data_root) -> data_mod.Splits:
    return data_mod.load("fashion-mnist", data_root)


@pytest.fixture(scope="session")
def trained_cnn3b(mnist):
    """A cnn3b trained for one epoch on 20% of MNIST's training split (~97% val accuracy), eval mode."""
    from trainables.train import TrainConfig, TrainRun

    run = TrainRun(
        TrainConfig(dataset="mnist", penalty="none", epochs=1, batch_size=64, data_fraction=0.2, seed=0), mnist
    )
    run.run_epoch()
    return run.model.eval()


@pytest.fixture(scope="module")
def ray_local():
    """A real private local Ray (2 CPUs, no dashboard), one per test module that asks for it."""
    import ray

    start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()
