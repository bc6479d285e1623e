"""Quota: Nova's and Cinder's absolute limits minus what others use; label costs from flavors."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

from nodepool.drivers.adapter import Resources
from nodepool.drivers.openstack.lookup import Flavor
from nodepool.drivers.openstack.servers import TAG_LABEL, TAG_POOL, TAG_PROVIDER, flavor_amounts

ATTACHED = "os-extended-volumes:volumes_attached"


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


def others_volumes(volume: Any, servers: Iterable[Mapping[str, Any]], provider: Any) -> Resources:
    """The project's volumes that are not our nodes' boot volumes: Cinder's used figures
    minus the volumes of the listed servers tagged with this provider (sized by their
    label's volume-size). Nothing when the cloud has no block storage (`volume` None).

    A volume of ours the listing does not show yet (or any more) counts as another's
    for a while: the error is on the safe side.
    """
    if volume is None:
        return Resources()
    count, size = 0, 0.0
    for server in servers:
        meta = server.get("metadata") or {}
        if meta.get(TAG_PROVIDER) != provider.name:
            continue
        count += len(server.get(ATTACHED) or [])
        pool = provider.pools.get(meta.get(TAG_POOL))
        label = pool.labels.get(meta.get(TAG_LABEL)) if pool is not None else None
        if label is not None and getattr(label, "boot_from_volume", False):
            size += getattr(label, "volume_size", 0)
    used_count = float(getattr(volume, "total_volumes_used", None) or 0)
    used_size = float(getattr(volume, "total_gigabytes_used", None) or 0)
    return Resources(volumes=max(0.0, used_count - count), volume_gb=max(0.0, used_size - size))


def quota_limits(absolute: Any, others: Resources, volume: Any = None) -> Resources | None:
    """The project's instance, core and RAM limits (Nova) and volume and volume-gb limits
    (Cinder) minus others' usage; None if all are unlimited.

    `volume` is Cinder's absolute limits, None when the cloud has no block-storage
    service: volumes are unlimited then, as in Nodepool (the pool's max-volumes and
    max-volume-gb still apply).
    """
    limits = Resources(instances=_limit(getattr(absolute, "instances", None)),
                       cores=_limit(getattr(absolute, "total_cores", None)),
                       ram=_limit(getattr(absolute, "total_ram", None)),
                       volumes=_limit(getattr(volume, "max_total_volumes", None)),
                       volume_gb=_limit(getattr(volume, "max_total_volume_gigabytes", None)))
    values = (limits.instances, limits.cores, limits.ram, limits.volumes, limits.volume_gb)
    if all(math.isinf(v) for v in values):
        return None
    return Resources(instances=max(0.0, limits.instances - others.instances),
                     cores=max(0.0, limits.cores - others.cores),
                     ram=max(0.0, limits.ram - others.ram),
                     volumes=max(0.0, limits.volumes - others.volumes),
                     volume_gb=max(0.0, limits.volume_gb - others.volume_gb))
