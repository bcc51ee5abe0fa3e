"""The evaluation stage really spreads: two Ray nodes on this machine (ray.cluster_utils.Cluster)."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from evaluation import stage
from tests.evaluation.stage_fixtures import make_selected, small_settings

pytestmark = pytest.mark.ray  # starts Ray, SSH or a launcher


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_tasks_run_on_both_nodes(two_nodes, tmp_path, mnist):
    import ray

    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    selected = make_selected(tmp_path, mnist)
    s = small_settings(n_samples=24, chunk_size=6, roar_fractions=[0.5], max_in_flight=2)
    stats = stage.run_stage(selected, s, tmp_path, log=lambda _: None)
    ev, ro = pd.read_parquet(tmp_path / "evaluation"), pd.read_parquet(tmp_path / "roar")
    used = set(ev["node_id"]) | set(ro["node_id"])
    assert used == nodes, (used, nodes)
    assert set(stats["nodes"]) == nodes
