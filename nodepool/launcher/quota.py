"""Quota arithmetic: pool, provider and tenant limits against what nodes use (pure functions)."""

from __future__ import annotations

import math
from typing import Callable, Iterable

from nodepool.config.model import Pool, TenantLimits
from nodepool.drivers.adapter import Resources
from nodepool.model import Node, NodeState

UNLIMITED = Resources(math.inf, math.inf, math.inf, math.inf, math.inf)

# Nodes in these states no longer hold cloud resources.
_FREE_STATES = frozenset({NodeState.DELETED})


def pool_limits(pool: Pool) -> Resources:
    """A pool's own limits (max-servers, max-cores, max-ram, max-volumes, max-volume-gb;
    UNLIMITED where the pool or its driver sets none)."""
    return Resources(instances=pool.max_servers, cores=pool.max_cores, ram=pool.max_ram,
                     volumes=pool.max_volumes, volume_gb=pool.max_volume_gb)


def tenant_limits(limits: TenantLimits | None) -> Resources:
    """A tenant's limits on the five amounts we count; `max-volumes` and `max-volume-gb`
    come from the entry's other keys, as Nodepool reads them (custom keys are not
    counted yet: issue 16)."""
    if limits is None:
        return UNLIMITED
    extra = limits.extra
    return Resources(instances=limits.max_servers, cores=limits.max_cores, ram=limits.max_ram,
                     volumes=extra.get("max-volumes", math.inf),
                     volume_gb=extra.get("max-volume-gb", math.inf))


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

