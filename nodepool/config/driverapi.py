"""What a driver supplies to the config loader, and helpers for the common keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nodepool.config.checks import CheckContext, Finding, RawMap
from nodepool.config.model import UNLIMITED, DiskImage, Label, Provider, freeze


@dataclass(frozen=True)
class BuildContext:
    """The already-built top-level values a driver may refer to."""

    labels: Mapping[str, Label]
    diskimages: Mapping[str, DiskImage]


@dataclass(frozen=True)
class Driver:
    """One entry of the driver table.

    ``schema`` validates a whole providers[] entry (common keys included);
    ``check`` returns semantic findings for it, given its key path;
    ``build`` turns a valid entry into the driver's frozen Provider value.
    """

    name: str
    schema: Callable[[Any], Any]
    check: Callable[[RawMap, str, CheckContext], list[Finding]]
    build: Callable[[RawMap, BuildContext], Provider]


DEFAULT_DRIVER = "openstack"


def provider_common(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the Provider fields every driver shares."""
    return {
        "name": raw["name"],
        "driver": raw.get("driver", DEFAULT_DRIVER),
        "max_concurrency": raw.get("max-concurrency", -1),
        "priority": raw.get("priority", 100),
        "rate": float(raw.get("rate", 1.0)),
        "boot_timeout": raw.get("boot-timeout", 60),
        "launch_timeout": raw.get("launch-timeout", 3600),
        "launch_retries": raw.get("launch-retries", 3),
    }


def pool_common(raw: Mapping[str, Any], provider: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the Pool fields every driver shares.

    A pool without its own priority takes its provider's, as in Nodepool.
    """
    return {
        "name": raw["name"],
        "max_servers": raw.get("max-servers", UNLIMITED),
        "priority": raw.get("priority", provider.get("priority", 100)),
        "node_attributes": freeze(raw.get("node-attributes", {})),
    }
