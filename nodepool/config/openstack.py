"""The openstack driver's keys: schema, semantic checks and frozen values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import voluptuous as v

from nodepool.config.checks import (
    CheckContext,
    Finding,
    RawMap,
    check_label_defined,
    duplicates,
    entries,
    text,
)
from nodepool.config.driverapi import BuildContext, Driver, pool_common, provider_common
from nodepool.config.errors import join_path
from nodepool.config.model import (
    DEFAULT_PORTS,
    UNLIMITED,
    Pool,
    PoolLabel,
    Provider,
    by_name,
    empty_map,
    freeze,
)
from nodepool.config.schema import (
    POOL_COMMON,
    PROVIDER_COMMON,
    Bool,
    FreeMap,
    Int,
    ListOf,
    Str,
    Struct,
)


@dataclass(frozen=True, kw_only=True)
class ProviderDiskImage:
    """A provider ``diskimages`` entry: a built image this cloud gets uploaded.

    ``username``, ``python_path`` and ``shell_type`` come from the top-level
    diskimage unless the entry sets python-path / shell-type itself.
    """

    name: str
    pause: bool = False
    config_drive: bool | None = None
    meta: Mapping[str, Any] = field(default_factory=empty_map)
    connection_type: str = "ssh"
    connection_port: int = 22
    username: str = "zuul"
    python_path: str = "auto"
    shell_type: str | None = None


@dataclass(frozen=True, kw_only=True)
class CloudImage:
    """A ``cloud-images`` entry: an image that already exists in the cloud.

    The cloud is asked for ``image_id`` if set, else ``image_name``, else
    ``name``.
    """

    name: str
    config_drive: bool | None = None
    image_id: str | None = None
    image_name: str | None = None
    username: str | None = None
    python_path: str = "auto"
    shell_type: str | None = None
    connection_type: str = "ssh"
    connection_port: int = 22


@dataclass(frozen=True, kw_only=True)
class OpenStackLabel(PoolLabel):
    """An openstack pool label: which image and flavor make this kind of node.

    Exactly one of ``diskimage`` (a provider diskimage name) and
    ``cloud_image`` (a cloud-images name) is set. ``networks`` and
    ``host_key_checking`` default to the pool's.
    """

    cloud_image: str | None = None
    flavor_name: str | None = None
    min_ram: int = 0
    key_name: str | None = None
    console_log: bool = False
    boot_from_volume: bool = False
    volume_size: int = 50
    instance_properties: Mapping[str, Any] = field(default_factory=empty_map)
    dynamic_instance_properties: Mapping[str, Any] = field(default_factory=empty_map)
    userdata: str | None = None
    networks: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class OpenStackPool(Pool):
    """An openstack pool; quota limits left unset are UNLIMITED.

    ``availability_zones`` empty means any zone the cloud offers.
    """

    networks: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    availability_zones: tuple[str, ...] = ()
    auto_floating_ip: bool = True
    # max_cores, max_ram, max_volumes, max_volume_gb, ignore_provider_quota and
    # host_key_checking are Pool's (model.py); diskimage and host_key_checking of a
    # label are PoolLabel's.


@dataclass(frozen=True, kw_only=True)
class OpenStackProvider(Provider):
    """A provider with ``driver: openstack``; ``cloud`` names a clouds.yaml entry."""

    cloud: str
    region_name: str | None = None
    diskimages: Mapping[str, ProviderDiskImage] = field(default_factory=empty_map)
    cloud_images: Mapping[str, CloudImage] = field(default_factory=empty_map)
    image_name_format: str = "{image_name}-{timestamp}"
    hostname_format: str = "{label.name}-{provider.name}-{node.id}"
    clean_floating_ips: bool = False
    port_cleanup_interval: int = 600
    image_upload_timeout: int = 3600
    post_upload_hook: str | None = None


# -- schema ---------------------------------------------------------------

PROVIDER_DISKIMAGE = Struct({
    v.Required("name"): Str,
    "pause": Bool,
    "config-drive": Bool,
    "meta": FreeMap,
    "connection-type": Str,
    "connection-port": Int,
    "python-path": Str,
    "shell-type": Str,
})

CLOUD_IMAGE = Struct({
    v.Required("name"): Str,
    "config-drive": Bool,
    "image-id": Str,
    "image-name": Str,
    "username": Str,
    "python-path": Str,
    "shell-type": Str,
    "connection-type": Str,
    "connection-port": Int,
})

POOL_LABEL = Struct({
    v.Required("name"): Str,
    "diskimage": Str,
    "cloud-image": Str,
    "min-ram": Int,
    "flavor-name": Str,
    "key-name": Str,
    "console-log": Bool,
    "boot-from-volume": Bool,
    "volume-size": Int,
    "instance-properties": FreeMap,
    "dynamic-instance-properties": FreeMap,
    "userdata": Str,
    "networks": ListOf(Str),
    "host-key-checking": Bool,
})

POOL = Struct({
    **POOL_COMMON,
    "labels": ListOf(POOL_LABEL),
    "networks": ListOf(Str),
    "security-groups": ListOf(Str),
    "availability-zones": ListOf(Str),
    "auto-floating-ip": Bool,
    "host-key-checking": Bool,
    "ignore-provider-quota": Bool,
    "max-cores": Int,
    "max-ram": Int,
    "max-volumes": Int,
    "max-volume-gb": Int,
})

PROVIDER = Struct({
    **PROVIDER_COMMON,
    v.Required("cloud"): Str,
    "region-name": Str,
    "pools": ListOf(POOL),
    "diskimages": ListOf(PROVIDER_DISKIMAGE),
    "cloud-images": ListOf(CLOUD_IMAGE),
    "image-name-format": Str,
    "hostname-format": Str,
    "clean-floating-ips": Bool,
    "port-cleanup-interval": Int,
    "image-upload-timeout": Int,
    "post-upload-hook": Str,
    # Accepted for old files; Nodepool ignores it too.
    "nodepool-id": Str,
})


# -- semantic checks ------------------------------------------------------

def check(raw: RawMap, path: str, ctx: CheckContext) -> list[Finding]:
    """References and choices inside one openstack provider."""
    images = list(entries(raw, "diskimages", path))
    clouds = list(entries(raw, "cloud-images", path))
    pools = list(entries(raw, "pools", path))
    found = duplicates(((p, text(i, "name")) for p, i in images), "diskimage")
    found += duplicates(((p, text(i, "name")) for p, i in clouds), "cloud-image")
    found += duplicates(((p, text(i, "name")) for p, i in pools), "pool")
    image_names = {n for _, i in images if (n := text(i, "name"))}
    cloud_names = {n for _, i in clouds if (n := text(i, "name"))}

    if ctx.diskimages is not None:
        for ipath, image in images:
            name = text(image, "name")
            if name is not None and name not in ctx.diskimages:
                message = f"diskimage '{name}' is not defined in the top-level diskimages section"
                found.append((join_path(ipath, "name"), message))
            elif name is not None and ctx.diskimages[name].get("abstract") is True:
                # As Nodepool's loader: an abstract image is only a parent, never built.
                message = (f"diskimage '{name}' is abstract (only a parent for other images, "
                           f"never built); a provider cannot use it")
                found.append((join_path(ipath, "name"), message))
    for cpath, image in clouds:
        if "image-id" in image and "image-name" in image:
            found.append((cpath, "image-id and image-name are mutually exclusive"))

    for ppath, pool in pools:
        labels = list(entries(pool, "labels", ppath))
        found += duplicates(((p, text(i, "name")) for p, i in labels), "label")
        for lpath, label in labels:
            found += _check_label(label, lpath, ctx, image_names, cloud_names)
    return found


def _check_label(label: RawMap, path: str, ctx: CheckContext,
                 image_names: set[str], cloud_names: set[str]) -> list[Finding]:
    found = check_label_defined(ctx, text(label, "name"), join_path(path, "name"))
    has_image, has_cloud = "diskimage" in label, "cloud-image" in label
    if has_image and has_cloud:
        found.append((path, "diskimage and cloud-image are mutually exclusive; set exactly one"))
    elif not has_image and not has_cloud:
        found.append((path, "one of diskimage or cloud-image is required"))
    image = text(label, "diskimage")
    if image is not None and image not in image_names:
        found.append((join_path(path, "diskimage"),
                      f"diskimage '{image}' is not listed in this provider's diskimages"))
    cloud = text(label, "cloud-image")
    if cloud is not None and cloud not in cloud_names:
        found.append((join_path(path, "cloud-image"),
                      f"cloud-image '{cloud}' is not listed in this provider's cloud-images"))
    if "flavor-name" not in label and "min-ram" not in label:
        found.append((path, "one of flavor-name or min-ram is required"))
    return found


# -- frozen values --------------------------------------------------------

def build(raw: RawMap, ctx: BuildContext) -> OpenStackProvider:
    """The OpenStackProvider value of a valid providers[] entry."""
    pools = [_build_pool(p, raw) for p in raw.get("pools", [])]
    return OpenStackProvider(
        **provider_common(raw),
        pools=by_name(pools),
        cloud=raw["cloud"],
        region_name=raw.get("region-name"),
        diskimages=by_name(_build_diskimage(i, ctx) for i in raw.get("diskimages", [])),
        cloud_images=by_name(_build_cloud_image(i) for i in raw.get("cloud-images", [])),
        image_name_format=raw.get("image-name-format", "{image_name}-{timestamp}"),
        hostname_format=raw.get("hostname-format", "{label.name}-{provider.name}-{node.id}"),
        clean_floating_ips=raw.get("clean-floating-ips", False),
        port_cleanup_interval=raw.get("port-cleanup-interval", 600),
        image_upload_timeout=raw.get("image-upload-timeout", 3600),
        post_upload_hook=raw.get("post-upload-hook"),
    )


def _connection(raw: Mapping[str, Any]) -> dict[str, Any]:
    kind = raw.get("connection-type", "ssh")
    return {"connection_type": kind,
                "connection_port": raw.get("connection-port", DEFAULT_PORTS.get(kind, 22))}


def _build_diskimage(raw: Mapping[str, Any], ctx: BuildContext) -> ProviderDiskImage:
    top = ctx.diskimages.get(raw["name"])
    return ProviderDiskImage(
        name=raw["name"],
        pause=raw.get("pause", False),
        config_drive=raw.get("config-drive"),
        meta=freeze(raw.get("meta", {})),
        username=top.username if top else "zuul",
        python_path=raw.get("python-path", top.python_path if top else "auto"),
        shell_type=raw.get("shell-type", top.shell_type if top else None),
        **_connection(raw),
    )


def _build_cloud_image(raw: Mapping[str, Any]) -> CloudImage:
    return CloudImage(
        name=raw["name"],
        config_drive=raw.get("config-drive"),
        image_id=raw.get("image-id"),
        image_name=raw.get("image-name"),
        username=raw.get("username"),
        python_path=raw.get("python-path", "auto"),
        shell_type=raw.get("shell-type"),
        **_connection(raw),
    )


def _build_pool(raw: Mapping[str, Any], provider: Mapping[str, Any]) -> OpenStackPool:
    networks = tuple(raw.get("networks", ()))
    host_key_checking = raw.get("host-key-checking", True)
    labels = [_build_label(label, networks, host_key_checking)
              for label in raw.get("labels", [])]
    return OpenStackPool(
        **pool_common(raw, provider),
        labels=by_name(labels),
        networks=networks,
        security_groups=tuple(raw.get("security-groups", ())),
        availability_zones=tuple(raw.get("availability-zones", ())),
        auto_floating_ip=raw.get("auto-floating-ip", True),
        host_key_checking=host_key_checking,
        ignore_provider_quota=raw.get("ignore-provider-quota", False),
        max_cores=raw.get("max-cores", UNLIMITED),
        max_ram=raw.get("max-ram", UNLIMITED),
        max_volumes=raw.get("max-volumes", UNLIMITED),
        max_volume_gb=raw.get("max-volume-gb", UNLIMITED),
    )


def _build_label(raw: Mapping[str, Any], pool_networks: tuple[str, ...],
                 pool_host_key_checking: bool) -> OpenStackLabel:
    return OpenStackLabel(
        name=raw["name"],
        diskimage=raw.get("diskimage"),
        cloud_image=raw.get("cloud-image"),
        flavor_name=raw.get("flavor-name"),
        min_ram=raw.get("min-ram", 0),
        key_name=raw.get("key-name"),
        console_log=raw.get("console-log", False),
        boot_from_volume=raw.get("boot-from-volume", False),
        volume_size=raw.get("volume-size", 50),
        instance_properties=freeze(raw.get("instance-properties", {})),
        dynamic_instance_properties=freeze(raw.get("dynamic-instance-properties", {})),
        userdata=raw.get("userdata"),
        networks=tuple(raw.get("networks", pool_networks)),
        host_key_checking=raw.get("host-key-checking", pool_host_key_checking),
    )


DRIVER = Driver(name="openstack", schema=PROVIDER, check=check, build=build)
