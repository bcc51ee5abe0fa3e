"""Start and stop a real local Ray quietly for a test module; environment for Ray subprocesses."""

from __future__ import annotations

import os

# Ray 2.60 turns token authentication on by default (keyed off ~/.ray/auth_token); a private
# local test cluster runs with it explicitly disabled, in the driver and every child process.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def ray_env(base: dict | None = None) -> dict:
    """``base`` (default: os.environ) with the variables a quiet private local Ray needs."""
    env = dict(os.environ if base is None else base)
    for k, v in RAY_ENV.items():
        env.setdefault(k, v)
    return env


def start_local_ray(num_cpus: int = 2, **kwargs):
    """A fresh private single-node Ray (no dashboard, worker logs not forwarded)."""
    import ray

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    if ray.is_initialized():
        ray.shutdown()
    kwargs.setdefault("log_to_driver", False)
    return ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=False, **kwargs)
