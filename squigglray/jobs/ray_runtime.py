"""Connect to Ray: the cluster in RAY_ADDRESS (as inside `ray job submit`), or a local instance."""

from __future__ import annotations

import os

import ray


def ensure_ray(num_cpus: int | None = None) -> None:
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # a submitted job or an existing cluster: resources are the cluster's
    else:
        ray.init(num_cpus=num_cpus)


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
