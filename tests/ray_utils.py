"""Start and stop a real local Ray quietly for a test module."""

from __future__ import annotations

import os


def start_local_ray(num_cpus: int = 2, **kwargs):
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        ray.shutdown()
    return ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
