"""Quota arithmetic: pool, provider and tenant limits against what nodes use (pure functions)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from nodepool.drivers.adapter import Resources
from nodepool.model import Node, NodeState

UNLIMITED = Resources(math.inf, math.inf, math.inf, math.inf, math.inf)

# Nodes in these states no longer hold cloud resources.
_FREE_STATES = frozenset({NodeState.DELETED})


def pool_limits(pool: Any) -> Resources:
    """A pool's own limits (max-servers, max-cores, max-ram, max-volumes, max-volume-gb)."""
    return Resources(
        instances=getattr(pool, "max_servers", math.inf),
        cores=getattr(pool, "max_cores", math.inf),
        ram=getattr(pool, "max_ram", math.inf),
        volumes=getattr(pool, "max_volumes", math.inf),
        volume_gb=getattr(pool, "max_volume_gb", math.inf),
    )


def tenant_limits(limits: Any) -> Resources:
    if limits is None:
        return UNLIMITED
    return Resources(instances=limits.max_servers, cores=limits.max_cores, ram=limits.max_ram,
                     volumes=math.inf, volume_gb=math.inf)


def node_cost(node: Node, fallback: Callable[[Node], Resources]) -> Resources:
    """What a node holds: its recorded `resources`, else the label's cost."""
    res = node.resources
    if isinstance(res, dict) and res:
        return Resources(instances=res.get("instances", 1), cores=res.get("cores", 0),
                         ram=res.get("ram", 0), volumes=res.get("volumes", 0),
                         volume_gb=res.get("volume-gb", res.get("volume_gb", 0)))
    return fallback(node)


def usage(nodes: Iterable[Node], cost: Callable[[Node], Resources]) -> Resources:
    total = Resources()
    for node in nodes:
        if node.state not in _FREE_STATES:
            total = total + cost(node)
    return total


def fits(needed: Resources, used: Resources, limit: Resources) -> bool:
    return (used + needed).fits_in(limit)


def min_of(*limits: Resources | None) -> Resources:
    """The tightest of several limits (None = unlimited)."""
    out = UNLIMITED
    for lim in limits:
        if lim is None:
            continue
        out = Resources(*(min(a, b) for a, b in zip(
            (out.instances, out.cores, out.ram, out.volumes, out.volume_gb),
            (lim.instances, lim.cores, lim.ram, lim.volumes, lim.volume_gb))))
    return out
