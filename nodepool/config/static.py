"""The static driver's keys: pre-existing hosts listed under pools[].nodes[]."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
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
from nodepool.config.model import Pool, PoolLabel, Provider, by_name
from nodepool.config.schema import (
    POOL_COMMON,
    PROVIDER_COMMON,
    Bool,
    Int,
    ListOf,
    Str,
    StrOrList,
    Struct,
)

log = logging.getLogger("nodepool.config")

# Common provider keys that mean nothing for standing hosts; Nodepool's schema
# refuses them for a static provider, so a migrated file has none of them.
IGNORED_PROVIDER_KEYS = ("rate", "boot-timeout", "launch-timeout", "launch-retries")

# A static host's connection-port when none is given, whatever its connection-type:
# Nodepool's loader reads `connection-port`, else `ssh-port`, else 22 (its
# documentation says 5986 for winrm; the code is what runs).
DEFAULT_PORT = 22


@dataclass(frozen=True, kw_only=True)
class StaticNode:
    """One pre-existing host; ``labels`` and ``host_keys`` are always tuples
    even when the file gives a single string."""

    name: str
    labels: tuple[str, ...]
    username: str = "zuul"
    # Seconds to wait for the host's ssh port when checking it.
    timeout: int = 5
    host_key_checking: bool = True
    host_keys: tuple[str, ...] = ()
    connection_type: str = "ssh"
    connection_port: int = DEFAULT_PORT
    shell_type: str | None = None
    # How many jobs may use this host at the same time.
    max_parallel_jobs: int = 1
    python_path: str = "auto"


@dataclass(frozen=True, kw_only=True)
class StaticPool(Pool):
    """A static pool; its ``labels`` are those of its nodes, in first-seen order."""

    nodes: tuple[StaticNode, ...] = ()


@dataclass(frozen=True, kw_only=True)
class StaticProvider(Provider):
    """A provider with ``driver: static``; it has no driver-specific keys."""


NODE = Struct({
    v.Required("name"): Str,
    v.Required("labels"): StrOrList,
    "username": Str,
    "timeout": Int,
    "host-key-checking": Bool,
    "host-key": StrOrList,
    "connection-port": Int,
    # The old name of connection-port; Nodepool's loader still reads it.
    "ssh-port": Int,
    "connection-type": Str,
    "shell-type": Str,
    "max-parallel-jobs": Int,
    "python-path": Str,
})

POOL = Struct({
    **POOL_COMMON,
    "nodes": ListOf(NODE),
})

PROVIDER = Struct({
    **PROVIDER_COMMON,
    "pools": ListOf(POOL),
})


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _port(node: Mapping[str, Any]) -> Any:
    """connection-port, else the legacy ssh-port (Nodepool's precedence), else 22."""
    return node.get("connection-port", node.get("ssh-port", DEFAULT_PORT))


def warnings(raw: RawMap, path: str) -> list[str]:
    """One line per key of this static providers[] entry that is accepted and ignored,
    and per non-ssh host that gets port 22 only because it names no port."""
    out = [f"{join_path(path, key)}: has no effect for a static provider (Nodepool "
           f"refuses it); remove it" for key in IGNORED_PROVIDER_KEYS if key in raw]
    for ppath, pool in entries(raw, "pools", path):
        for npath, node in entries(pool, "nodes", ppath):
            kind = node.get("connection-type", "ssh")
            if kind not in ("ssh", "network_cli") and isinstance(kind, str) and \
                    "connection-port" not in node and "ssh-port" not in node:
                out.append(f"{join_path(npath, 'connection-type')}: {kind} host without "
                           f"connection-port gets port {DEFAULT_PORT}, as in Nodepool (whose "
                           f"documentation says 5986 for winrm); set connection-port")
    return out


def check(raw: RawMap, path: str, ctx: CheckContext) -> list[Finding]:
    """Duplicate pools and hosts, and labels missing from the top level; the keys that
    are ignored are logged as warnings (nodepool.config logger)."""
    for line in warnings(raw, path):
        log.warning("%s", line)
    pools = list(entries(raw, "pools", path))
    found = duplicates(((p, text(i, "name")) for p, i in pools), "pool")
    nodes = [(npath, node) for ppath, pool in pools
             for npath, node in entries(pool, "nodes", ppath)]
    # Nodepool tells static hosts apart by (name, username, port), so the same
    # host may appear twice with different users or ports.
    found += duplicates(((p, _node_key(n)) for p, n in nodes), "static node")
    for npath, node in nodes:
        labels = node.get("labels")
        names = [labels] if isinstance(labels, str) else labels
        if not isinstance(names, list):
            continue
        for index, name in enumerate(names):
            if isinstance(name, str):
                where = (join_path(npath, "labels") if isinstance(labels, str)
                         else join_path(npath, "labels", index))
                found += check_label_defined(ctx, name, where)
    return found


def _node_key(node: Mapping[str, Any]) -> str | None:
    """`[user@]name[:port]`: the user and port only where they are not the defaults."""
    name = text(node, "name")
    if name is None:
        return None
    port = _port(node)
    user = node.get("username", "zuul")
    where = name if port == DEFAULT_PORT else f"{name}:{port}"
    return where if user == "zuul" else f"{user}@{where}"


def build(raw: RawMap, ctx: BuildContext) -> StaticProvider:
    """The StaticProvider value of a valid providers[] entry."""
    pools = [_build_pool(p, raw) for p in raw.get("pools", [])]
    return StaticProvider(**provider_common(raw), pools=by_name(pools))


def _build_pool(raw: Mapping[str, Any], provider: Mapping[str, Any]) -> StaticPool:
    nodes = tuple(_build_node(n) for n in raw.get("nodes", []))
    label_names = dict.fromkeys(name for node in nodes for name in node.labels)
    return StaticPool(
        **pool_common(raw, provider),
        labels=by_name(PoolLabel(name=name) for name in label_names),
        nodes=nodes,
    )


def _build_node(raw: Mapping[str, Any]) -> StaticNode:
    return StaticNode(
        name=raw["name"],
        labels=_as_tuple(raw["labels"]),
        username=raw.get("username", "zuul"),
        timeout=raw.get("timeout", 5),
        host_key_checking=raw.get("host-key-checking", True),
        host_keys=_as_tuple(raw.get("host-key")),
        connection_type=raw.get("connection-type", "ssh"),
        connection_port=_port(raw),
        shell_type=raw.get("shell-type"),
        max_parallel_jobs=raw.get("max-parallel-jobs", 1),
        python_path=raw.get("python-path", "auto"),
    )


DRIVER = Driver(name="static", schema=PROVIDER, check=check, build=build)
