"""Placement against the live cluster: fail fast when no node can ever run a request.

Ray leaves a task, actor or Tune trial that no node can hold pending forever (or until an autoscaler
adds a node that fits). `check_feasible` reads the alive nodes' total resources (`ray.nodes()`) and
the node types the autoscaler may launch (its cluster config, when there is one), and raises
`PlacementError` naming the request and the node types there are when none of them fits.

    from actors.placement import options
    task.options(**options(DEFAULTS["probe"], "probe trial")).remote(...)
"""

from __future__ import annotations

import os
from typing import Any

import ray

from squigglray.placement import Placement, PlacementError, check_nodes, to_ray_options

__all__ = ["PlacementError", "check_feasible", "cluster_nodes", "options"]

SKIP_ENV = "SQUIGGLRAY_SKIP_PLACEMENT_CHECK"  # "1": trust the request (e.g. nodes come from outside Ray)


def _autoscaler_node_types() -> list[dict[str, float]]:
    """Resources of the node types the autoscaler can launch (max_count != 0); [] without one."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - no autoscaler config (local Ray, ray.cluster_utils) or an older Ray
        return []
    if config is None:
        return []
    return [{k: float(v) for k, v in g.resources.items()} for g in config.node_group_configs
            if g.max_count != 0 and g.resources]


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of every alive node, then of every node type the autoscaler may add."""
    alive = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    return alive + _autoscaler_node_types()


def check_feasible(p: Placement, nodes: list[dict[str, float]] | None = None, what: str = "the request") -> None:
    """Raise PlacementError unless one node (alive, or a type the autoscaler can launch) fits `p`.

    `nodes`: resource dicts to check against instead of the live cluster (tests, dry runs).
    """
    if nodes is None:
        if os.environ.get(SKIP_ENV) == "1" or not ray.is_initialized():
            return
        nodes = cluster_nodes()
    check_nodes(p, nodes, what)


def options(p: Placement, what: str = "the request") -> dict[str, Any]:
    """check_feasible, then the `.options(**...)` of a task or actor."""
    check_feasible(p, what=what)
    return to_ray_options(p)
