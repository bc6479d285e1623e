"""Cached answers to "which flavor, image, network": looked up once, reused by every launch."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from nodepool.drivers.openstack.cloud import Cloud
from nodepool.errors import ConfigurationError

# Cloud images are re-read now and then: a new upload may take an old name.
IMAGE_TTL = 300.0


@dataclasses.dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    ram: int  # MiB
    disk: int


@dataclasses.dataclass(frozen=True)
class Network:
    id: str
    name: str
    external: bool


class Catalog:
    """Flavors, networks and cloud images of one provider's cloud (thread-safe).

    Each `load_*` makes one API call when its cache is empty; a create step
    may call several of them the first time, then none for later launches.
    `invalidate()` forgets everything: after Nova refuses a create with 400
    the cached answer may be the reason.
    """

    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        self.provider = cloud.provider
        self._lock = threading.Lock()
        self._flavors: list[Flavor] | None = None
        self._networks: list[Network] | None = None
        self._images: dict[str, tuple[float, str]] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._flavors, self._networks, self._images = None, None, {}

    # -- flavors ---------------------------------------------------------

    def flavors(self) -> list[Flavor]:
        with self._lock:
            cached = self._flavors
        if cached is not None:
            return cached
        found = self.cloud.call("list flavors", lambda conn: [
            Flavor(id=f.id, name=f.name, vcpus=int(f.vcpus or 0), ram=int(f.ram or 0),
                   disk=int(f.disk or 0)) for f in conn.compute.flavors(details=True)])
        found.sort(key=lambda f: (f.ram, f.vcpus, f.disk, f.name))
        with self._lock:
            self._flavors = found
        return found

    def cached_flavors(self) -> list[Flavor] | None:
        with self._lock:
            return self._flavors

    def flavor_for(self, label: Any) -> Flavor:
        """flavor-name (a name or an id), else the smallest flavor with at least min-ram.

        With both set, as in Nodepool, min-ram picks among flavors whose name
        contains flavor-name.
        """
        flavors = self.flavors()
        where = f"provider {self.provider.name}: label {label.name}"
        name = getattr(label, "flavor_name", None)
        min_ram = getattr(label, "min_ram", 0) or 0
        if min_ram:
            for flavor in flavors:
                if flavor.ram >= min_ram and (not name or name in flavor.name):
                    return flavor
            raise ConfigurationError(
                f"{where}: no flavor has min-ram {min_ram} MiB"
                f"{f' and a name containing {name!r}' if name else ''}; the cloud has "
                + ", ".join(f"{f.name} ({f.ram} MiB)" for f in flavors))
        for flavor in flavors:
            if name in (flavor.name, flavor.id):
                return flavor
        raise ConfigurationError(f"{where}: flavor-name {name!r} is not in the cloud (it has "
                                 f"{', '.join(f.name for f in flavors) or 'no flavors'})")

    def flavor_by_id(self, flavor_id: str | None) -> Flavor | None:
        for flavor in self.cached_flavors() or []:
            if flavor.id == flavor_id:
                return flavor
        return None

    # -- networks --------------------------------------------------------

    def networks(self) -> list[Network]:
        with self._lock:
            cached = self._networks
        if cached is not None:
            return cached
        found = self.cloud.call("list networks", lambda conn: [
            Network(id=n.id, name=n.name or "", external=bool(n.is_router_external))
            for n in conn.network.networks()])
        with self._lock:
            self._networks = found
        return found

    def network_id(self, name_or_id: str, where: str) -> str:
        networks = self.networks()
        for network in networks:
            if name_or_id == network.id:
                return network.id
        matches = [n for n in networks if n.name == name_or_id]
        if len(matches) == 1:
            return matches[0].id
        if matches:
            raise ConfigurationError(f"{where}: network name {name_or_id!r} is ambiguous "
                                     f"({len(matches)} networks); give its id")
        raise ConfigurationError(f"{where}: network {name_or_id!r} is not in the cloud (it has "
                                 f"{', '.join(sorted(n.name for n in networks)) or 'none'})")

    def external_network(self) -> Network | None:
        """Where floating IPs come from: clouds.yaml's nat_source network, else the
        first external one; None when the cloud has none (no floating IPs then)."""
        networks = [n for n in self.networks() if n.external]
        nat_source = None
        try:
            nat_source = self.cloud.connection().config.get_nat_source()
        except Exception:  # older config objects, or none configured
            nat_source = None
        for network in networks:
            if nat_source and nat_source in (network.name, network.id):
                return network
        return networks[0] if networks else None

    def external_network_names(self) -> frozenset[str]:
        """Names of external networks, from the cache only (no call; empty until loaded)."""
        with self._lock:
            cached = self._networks
        return frozenset(n.name for n in cached or () if n.external)

    # -- images ----------------------------------------------------------

    def cloud_image_id(self, image: Any) -> str:
        """A cloud-images entry's image id: image-id as given, else the newest active
        image named image-name (or name)."""
        if image.image_id:
            return image.image_id  # Nova checks it; a 400 from create says if it is wrong
        name = image.image_name or image.name
        now = time.monotonic()
        with self._lock:
            cached = self._images.get(name)
        if cached is not None and now - cached[0] < IMAGE_TTL:
            return cached[1]
        found = self.cloud.call(f"find image {name!r}", lambda conn: sorted(
            conn.image.images(name=name, status="active"),
            key=lambda i: i.created_at or "", reverse=True))
        if not found:
            raise ConfigurationError(f"provider {self.provider.name}: cloud-image {image.name!r}: "
                                     f"no active image named {name!r} in cloud "
                                     f"{self.provider.cloud}")
        with self._lock:
            self._images[name] = (now, found[0].id)
        return found[0].id
