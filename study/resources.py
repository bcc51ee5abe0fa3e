"""Does a trial fit? The one resource check, against a cluster file's node types (before anything
starts) and against the connected Ray's live nodes (before any trial starts, waiting a while on a
cluster that may still grow)."""

from __future__ import annotations

import json
import os
import time

from study.config import ConfigError, StudyConfig

NODE_TYPES_ENV = "SALIENCY_NODE_TYPES"  # the cluster file's node types (JSON) for the job's resource check
EXPECT_WORKERS_ENV = "SALIENCY_EXPECT_WORKERS"  # set by the cluster launch: workers are on their way

RESOURCE_WAIT_ENV = "SALIENCY_RESOURCE_WAIT_S"  # how long a cluster that may grow gets before the warning


def _cluster_may_grow(address: str | None) -> bool:
    """True on a cluster that can still add nodes: an autoscaler reports to it, or workers are on their way."""
    if not address:
        return False
    if os.environ.get(EXPECT_WORKERS_ENV):
        return True
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        return bool(_internal_kv_get("__autoscaling_status"))  # ray_constants.DEBUG_AUTOSCALING_STATUS
    except Exception:
        return False


def resource_shortfall(cfg: StudyConfig) -> str | None:
    """None if one alive node of the connected Ray can hold a trial's ``resources``, else why not."""
    import ray

    nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    have = f"the cluster has {total.get('CPU', 0):g} CPU and {total.get('GPU', 0):g} GPU on {len(nodes)} node(s)"
    return trial_shortfall(
        cfg, dict(enumerate(nodes)), what="node of this Ray cluster", have=have,
        more=lambda k, most: "a Ray with GPUs" if k == "GPU" and not most
        else f"bigger nodes (--num-{k.lower()}s for the local Ray)",
    )


def check_resources(cfg: StudyConfig, address: str | None, log=print, wait_s: float | None = None) -> None:
    """Refuse, before any trial starts, a per-trial request no node can meet (trials would stay PENDING forever).

    On a cluster that may still grow (autoscaler, workers joining) wait up to ``wait_s`` seconds
    (default ``$SALIENCY_RESOURCE_WAIT_S`` or 120) for a node that fits, then warn and go on.
    """
    why = resource_shortfall(cfg)
    if why is None:
        return
    if not _cluster_may_grow(address):
        raise ConfigError(why)
    types = json.loads(os.environ.get(NODE_TYPES_ENV) or "{}")  # the cluster file's node types, if it declares them
    never = node_type_shortfall(cfg, types)
    if never:  # no node the cluster can start would hold a trial: waiting cannot help
        raise ConfigError(never)
    wait_s = float(os.environ.get(RESOURCE_WAIT_ENV, 120)) if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        if resource_shortfall(cfg) is None:
            return
    log(
        f"[study] warning: still no node for a trial after {wait_s:g} s, trials stay PENDING until the cluster "
        f"grows (Ctrl-C to stop): {why.split('; valid choices')[0]}"
    )



def trial_shortfall(cfg: StudyConfig, pools: dict[str, dict], *, what: str, have: str, more) -> str | None:
    """None if one of ``pools`` (name -> its resources, e.g. ``{"CPU": 16, "GPU": 1}``) holds one trial's
    ``resources``, else a one-line reason: ``what`` names a pool ("node of this Ray cluster", "node type of
    the cluster"), ``have`` lists what exists, ``more(kind, most)`` is the advice besides lowering the request.
    The one check behind both :func:`node_type_shortfall` and :func:`resource_shortfall`."""
    need = {k: float(v) for k, v in (("CPU", cfg.resources.cpu), ("GPU", cfg.resources.gpu)) if v and v > 0}
    if any(all(r.get(k, 0.0) >= v for k, v in need.items()) for r in pools.values()):
        return None
    for k, v in need.items():
        most = max((r.get(k, 0.0) for r in pools.values()), default=0.0)
        if most < v:
            key = f"resources.{k.lower()}"
            return (f"{key}: each trial asks for {v:g} {k}, but no {what} has more than {most:g} ({have}); "
                    f"valid choices: --set {key}={most:g}{' or less' if most else ''}, or {more(k, most)}")
    return (f"resources: each trial asks for {', '.join(f'{v:g} {k}' for k, v in need.items())} together, but no "
            f"{what} has all of them ({have}); valid choices: lower resources.cpu or resources.gpu")


def node_type_shortfall(cfg: StudyConfig, node_types: dict[str, dict]) -> str | None:
    """None if some node type the cluster can start holds one trial (``resources``), or if no type
    declares its resources (Ray detects them when the node starts); else a one-line reason."""
    if not node_types:
        return None
    types = ", ".join(f"{n}: {r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for n, r in node_types.items())
    return trial_shortfall(cfg, node_types, what="node type of the cluster", have=types,
                           more=lambda k, most: f"a node type with more {k} in available_node_types")
