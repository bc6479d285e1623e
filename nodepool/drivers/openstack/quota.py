"""Quota: Nova's absolute limits minus what others' servers use; label costs from flavors."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

from nodepool.drivers.adapter import Resources
from nodepool.drivers.openstack.lookup import Flavor
from nodepool.drivers.openstack.servers import TAG_PROVIDER, flavor_amounts


def _limit(value: Any) -> float:
    """Nova's -1 (or a missing figure) means unlimited."""
    if value is None:
        return math.inf
    value = float(value)
    return math.inf if value < 0 else value


def label_cost(flavor: Flavor, label: Any) -> Resources:
    """One node: an instance, the flavor's cores and RAM, and its boot volume if any."""
    cost = Resources(instances=1, cores=flavor.vcpus, ram=flavor.ram)
    if getattr(label, "boot_from_volume", False):
        cost = cost + Resources(volumes=1, volume_gb=getattr(label, "volume_size", 50))
    return cost


def others_usage(servers: Iterable[Mapping[str, Any]], provider_name: str,
                 flavor_by_id: Callable[[str | None], Flavor | None]) -> Resources:
    """What servers not tagged with this provider use: other providers', humans'.

    Ours are not counted here: the core counts our nodes from ZooKeeper.
    A server whose flavor is unknown (deleted flavor, old microversion and an
    empty cache) counts as an instance only.
    """
    used = Resources()
    for server in servers:
        if (server.get("metadata") or {}).get(TAG_PROVIDER) == provider_name:
            continue
        flavor_id, vcpus, ram = flavor_amounts(server)
        if vcpus is None or ram is None:
            flavor = flavor_by_id(flavor_id)
            vcpus, ram = (flavor.vcpus, flavor.ram) if flavor else (0, 0)
        used = used + Resources(instances=1, cores=vcpus or 0, ram=ram or 0)
    return used


def quota_limits(absolute: Any, others: Resources) -> Resources | None:
    """The project's instance, core and RAM limits minus others' usage; None if all unlimited.

    Volumes are Cinder's quota, which we do not read: unlimited here, the
    pool's max-volumes and max-volume-gb still apply.
    """
    limits = Resources(instances=_limit(getattr(absolute, "instances", None)),
                       cores=_limit(getattr(absolute, "total_cores", None)),
                       ram=_limit(getattr(absolute, "total_ram", None)),
                       volumes=math.inf, volume_gb=math.inf)
    if all(math.isinf(v) for v in (limits.instances, limits.cores, limits.ram)):
        return None
    return Resources(instances=max(0.0, limits.instances - others.instances),
                     cores=max(0.0, limits.cores - others.cores),
                     ram=max(0.0, limits.ram - others.ram),
                     volumes=math.inf, volume_gb=math.inf)
