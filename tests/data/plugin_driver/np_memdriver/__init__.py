"""np_memdriver: a driver added by a package of its own (doc/drivers.md), servers in memory.

Its entry points (tests/test_driver_plugins.py writes them into a dist-info):
``memory = np_memdriver:PLUGIN`` and ``lazy = np_memdriver:LAZY``.
"""

from __future__ import annotations

import voluptuous as v

from nodepool.config.checks import CheckContext, Finding, RawMap, check_label_defined, entries
from nodepool.config.driverapi import BuildContext, Driver, pool_common, provider_common
from nodepool.config.errors import join_path
from nodepool.config.model import Pool, PoolLabel, Provider, by_name
from nodepool.config.schema import POOL_COMMON, PROVIDER_COMMON, ListOf, Str, Struct
from nodepool.drivers.plugins import DriverPlugin

LABEL = Struct({v.Required("name"): Str})
POOL = Struct({**POOL_COMMON, "labels": ListOf(LABEL)})
PROVIDER = Struct({**PROVIDER_COMMON, "pools": ListOf(POOL)})


def check(raw: RawMap, path: str, ctx: CheckContext) -> list[Finding]:
    """Every pool label must be a top-level label."""
    found: list[Finding] = []
    for pool_path, pool in entries(raw, "pools", path):
        for label_path, label in entries(pool, "labels", pool_path):
            name = label.get("name")
            found += check_label_defined(ctx, name if isinstance(name, str) else None,
                                         join_path(label_path, "name"))
    return found


def build(raw: RawMap, ctx: BuildContext) -> Provider:
    """Nodes in memory have no ssh server: their labels do not scan host keys."""
    pools = [Pool(**pool_common(p, raw),
                  labels=by_name(PoolLabel(name=label["name"], host_key_checking=False)
                                 for label in p.get("labels", [])))
             for p in raw.get("pools", [])]
    return Provider(**provider_common(raw), pools=by_name(pools))


def _driver(name: str) -> Driver:
    return Driver(name=name, schema=PROVIDER, check=check, build=build)


# The adapter is named, not imported: nodepool imports it when a provider runs.
PLUGIN = DriverPlugin(config=_driver("memory"), adapter="np_memdriver.adapter:MemoryAdapter")
# A driver whose cloud SDK is not installed: its config still validates, and a
# launcher still runs the other drivers' providers.
LAZY = DriverPlugin(config=_driver("lazy"), adapter="np_memdriver.needs_sdk:Adapter")
