"""Fixtures of the cluster tests: a two-node Ray cluster made of separate `ray start` processes
(two raylets on this machine, 1 CPU each, their own ports and temp dir) and an S3 server (moto)
on loopback. Everything is killed by process group at the end, even after a failure."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cluster import helpers


@pytest.fixture(scope="session")
def data_root_path() -> Path:
    from foundations import data as data_mod

    root = data_mod.default_root()
    if not data_mod.is_prepared(root, "mnist"):
        pytest.fail(f"mnist is not prepared under {root}: run `make data` (or set SALIENCY_DATA_ROOT)")
    return root


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="saliency-cluster-", dir="/tmp"))
    yield d
    if not os.environ.get("SALIENCY_KEEP_TEST_DIRS"):  # set it to look at the logs after a failure
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(workdir):
    server = helpers.start_s3(workdir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_nodes(workdir, s3, data_root_path):
    """A head (driver side, dashboard/job server on 127.0.0.1) and one worker node."""
    env = helpers.ray_env({"SALIENCY_DATA_ROOT": str(data_root_path), "SALIENCY_STATE_DIR": str(workdir / "head-state"),
                     **s3.env()})
    nodes = []
    try:
        head = helpers.start_head(workdir, env, num_cpus=1)
        nodes.append(head)
        worker = helpers.start_worker(workdir, head, env, num_cpus=1, label="worker1")
        nodes.append(worker)
        helpers.wait_for(lambda: len(helpers.alive_nodes(head.ports["dashboard-port"])) == 2 or not worker.alive(), 120,
                   "the worker node to join")
        assert worker.alive(), worker.log.read_text()[-3000:]
        cluster = {"head": head, "workers": [worker], "env": env, "nodes": nodes, "workdir": workdir}
        yield cluster
    finally:
        for n in reversed(nodes):
            n.kill()
        for n in list(locals().get("cluster", {}).get("workers", [])):
            n.kill()
