"""Turn validated YAML data into the frozen Config value, applying defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from nodepool.config.driverapi import BuildContext
from nodepool.config.drivers import driver_for
from nodepool.config.model import (
    UNLIMITED,
    Config,
    DiskImage,
    Label,
    TenantLimits,
    WebApp,
    ZooKeeperServer,
    ZooKeeperTLS,
    by_name,
    freeze,
)

# Diskimage keys a child image takes from its parent unless it sets them:
# YAML key -> (DiskImage field, conversion of the YAML value).
_INHERITED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    # Always a string: it ends up in DIB_RELEASE, but YAML reads `9` as int.
    "release": ("release", str),
    "rebuild-age": ("rebuild_age", int),
    "formats": ("formats", tuple),
    "pause": ("pause", bool),
    "python-path": ("python_path", str),
    "shell-type": ("shell_type", str),
    "username": ("username", str),
    "build-timeout": ("build_timeout", int),
    "dib-cmd": ("dib_cmd", str),
    "delete-after-upload": ("delete_after_upload", bool),
    "keep-formats": ("keep_formats", tuple),
    "block-device": ("block_device", freeze),
}

_TENANT_KEYS = {"tenant-name", "max-servers", "max-cores", "max-ram"}


def build_config(data: Mapping[str, Any], source_path: str) -> Config:
    """The Config of a file that passed the schema and the semantic checks."""
    labels = by_name(
        Label(name=raw["name"], min_ready=raw.get("min-ready", 0),
              max_ready_age=raw.get("max-ready-age", 0))
        for raw in data.get("labels", []))
    diskimages = resolve_diskimages(data.get("diskimages", []))
    ctx = BuildContext(labels=labels, diskimages=diskimages)
    providers = []
    for raw in data.get("providers", []):
        driver = driver_for(raw)
        # The schema has already refused unknown drivers.
        assert driver is not None
        providers.append(driver.build(raw, ctx))

    tls = data.get("zookeeper-tls")
    webapp = data.get("webapp", {})
    max_hold_age = data.get("max-hold-age")
    return Config(
        zookeeper_servers=tuple(
            ZooKeeperServer(host=s["host"], port=s.get("port", 2281), chroot=s.get("chroot"))
            for s in data["zookeeper-servers"]),
        zookeeper_tls=ZooKeeperTLS(cert=tls["cert"], key=tls["key"], ca=tls["ca"],
                                   source=source_path) if tls else None,
        zookeeper_timeout=float(data.get("zookeeper-timeout", 10.0)),
        labels=labels,
        providers=by_name(providers),
        diskimages=diskimages,
        webapp=WebApp(port=webapp.get("port", 8005),
                      listen_address=webapp.get("listen_address", "0.0.0.0")),
        # Nodepool treats an unset or non-positive max-hold-age as no limit.
        max_hold_age=max_hold_age if max_hold_age and max_hold_age > 0 else UNLIMITED,
        tenant_resource_limits=MappingProxyType({
            raw["tenant-name"]: _tenant(raw)
            for raw in data.get("tenant-resource-limits", [])}),
        elements_dir=data.get("elements-dir"),
        images_dir=data.get("images-dir"),
        images_dir_required_free=data.get("images-dir-required-free", 1024),
        build_log_dir=data.get("build-log-dir", "/var/log/nodepool/builds"),
        build_log_retention=data.get("build-log-retention", 7),
        source_path=source_path,
    )


def _tenant(raw: Mapping[str, Any]) -> TenantLimits:
    return TenantLimits(
        tenant_name=raw["tenant-name"],
        max_servers=raw.get("max-servers", UNLIMITED),
        max_cores=raw.get("max-cores", UNLIMITED),
        max_ram=raw.get("max-ram", UNLIMITED),
        extra=freeze({k: v for k, v in raw.items() if k not in _TENANT_KEYS}),
    )


def resolve_diskimages(raws: list[Mapping[str, Any]]) -> Mapping[str, DiskImage]:
    """DiskImage values with parents applied, in file order.

    Parents may be defined after their children; the checks have already
    refused unknown parents and loops.
    """
    by_raw = {raw["name"]: raw for raw in raws}
    done: dict[str, DiskImage] = {}

    def resolve(name: str) -> DiskImage:
        if name in done:
            return done[name]
        raw = by_raw[name]
        parent_name = raw.get("parent")
        base = resolve(parent_name) if parent_name else DiskImage(name=name)
        changes: dict[str, Any] = {
            field_name: convert(raw[yaml_key])
            for yaml_key, (field_name, convert) in _INHERITED.items()
            if yaml_key in raw
        }
        image = dataclasses.replace(
            base,
            name=name,
            # Being abstract is a property of the image itself, not inherited.
            abstract=raw.get("abstract", False),
            # Nodepool sets it from each config in the chain: the image's own wins, even empty.
            metadata=freeze(raw.get("metadata", {})),
            parent=parent_name,
            elements=base.elements + tuple(raw.get("elements", ())),
            env_vars=freeze({**base.env_vars, **raw.get("env-vars", {})}),
            **changes,
        )
        done[name] = image
        return image

    return MappingProxyType({name: resolve(name) for name in by_raw})
