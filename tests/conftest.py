"""Shared fixtures: real prepared data (``make data``), a small really-trained model.

Ray fixtures live in the test modules that need them (one local Ray per module, ``num_cpus``
pinned, dashboard off), see ``tests/ray_utils.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from foundations import data as data_mod
from tests.ray_utils import start_local_ray

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# `make test-fast` runs `pytest -m "not ray and not slow"`. Each test that starts Ray, SSH or the launcher in a
# subprocess says so: `@pytest.mark.ray`, a module's `pytestmark`, or the `ray_local` fixture (which implies it).
# A test that starts Ray without the mark fails (check_ray_marker below).


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_local" in item.fixturenames:
            item.add_marker(pytest.mark.ray)


@pytest.fixture(autouse=True)
def check_ray_marker(request):
    """Fail a test that starts Ray in this process without being marked `ray` (a Ray left up by an earlier
    test of the module's shared fixture is not this test's doing)."""
    def running() -> bool:
        ray = sys.modules.get("ray")
        return ray is not None and ray.is_initialized()

    before = running()
    yield
    if not before and running() and request.node.get_closest_marker("ray") is None:
        pytest.fail(f"{request.node.nodeid} starts Ray but is not marked ray (@pytest.mark.ray)")


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
