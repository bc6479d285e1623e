"""Semantic checks: references between sections, duplicate names, choices.

They run on the raw (substituted) YAML even when the schema found problems,
so every helper here tolerates values of the wrong type and simply skips
them: the schema has already reported those.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nodepool.config.errors import join_path

# A semantic problem before the file name is attached: (key path, message).
Finding = tuple[str, str]

# A YAML mapping as loaded, before validation.
RawMap = dict[str, Any]


@dataclass(frozen=True)
class CheckContext:
    """What a driver's checks may look up in the rest of the file."""

    labels: frozenset[str]
    # Top-level diskimages by name, or None when the section is absent (then
    # provider diskimages cannot be checked against it, e.g. launcher files).
    diskimages: Mapping[str, Mapping[str, Any]] | None


def entries(parent: Any, key: str, base: str) -> Iterator[tuple[str, RawMap]]:
    """The mapping items of the list parent[key], each with its key path."""
    if not isinstance(parent, dict):
        return
    items = parent.get(key)
    if not isinstance(items, list):
        return
    for index, item in enumerate(items):
        if isinstance(item, dict):
            yield join_path(base, key, index), item


def text(item: Mapping[str, Any], key: str) -> str | None:
    """item[key] if it is a string, else None (the schema reports bad types)."""
    value = item.get(key)
    return value if isinstance(value, str) else None


def duplicates(named: Iterable[tuple[str, str | None]], what: str,
               key: str = "name") -> list[Finding]:
    """Report every repeat of a name, pointing back at its first definition."""
    first: dict[str, str] = {}
    found: list[Finding] = []
    for path, name in named:
        if name is None:
            continue
        if name in first:
            found.append((join_path(path, key),
                          f"duplicate {what} '{name}' (first defined at {first[name]})"))
        else:
            first[name] = path
    return found


def check_label_defined(ctx: CheckContext, name: str | None, path: str) -> list[Finding]:
    """A label offered by a pool must be declared in the top-level labels."""
    if name is None or name in ctx.labels:
        return []
    return [(path, f"label '{name}' is not defined in the top-level labels section")]


def context_for(data: Mapping[str, Any]) -> CheckContext:
    """Collect the names drivers' checks refer to."""
    labels = frozenset(n for _, item in entries(data, "labels", "")
                       if (n := text(item, "name")) is not None)
    diskimages: dict[str, Mapping[str, Any]] | None = None
    if isinstance(data.get("diskimages"), list):
        diskimages = {}
        for _, item in entries(data, "diskimages", ""):
            name = text(item, "name")
            if name is not None:
                diskimages.setdefault(name, item)
    return CheckContext(labels=labels, diskimages=diskimages)


def check_top_level(data: Mapping[str, Any]) -> list[Finding]:
    """Checks of the sections that are not providers."""
    found: list[Finding] = []
    if data.get("zookeeper-servers") == []:
        found.append(("zookeeper-servers", "expected at least one server"))
    found += _check_chroots(data)
    found += duplicates(((p, text(i, "name")) for p, i in entries(data, "labels", "")),
                        "label")
    found += duplicates(((p, text(i, "name")) for p, i in entries(data, "providers", "")),
                        "provider")
    found += duplicates(((p, text(i, "tenant-name"))
                         for p, i in entries(data, "tenant-resource-limits", "")),
                        "tenant", key="tenant-name")
    found += _check_diskimages(data)
    return found


def _check_chroots(data: Mapping[str, Any]) -> list[Finding]:
    """One chroot for the ensemble: it may be written on any server, and every
    server that sets one must set the same (Nodepool's hosts string would make
    a chroot on any server but the last swallow the servers after it)."""
    found: list[Finding] = []
    first: tuple[str, str] | None = None
    for path, server in entries(data, "zookeeper-servers", ""):
        chroot = text(server, "chroot")
        if not chroot:
            continue
        where = join_path(path, "chroot")
        if not chroot.startswith("/"):
            found.append((where, f"a chroot is a ZooKeeper path and starts with '/', "
                                 f"got {chroot!r}"))
        elif first is None:
            first = (where, chroot.rstrip("/") or "/")
        elif (chroot.rstrip("/") or "/") != first[1]:
            found.append((where, f"chroot {chroot!r} differs from {first[1]!r} at {first[0]}; "
                                 f"the servers of one ensemble share one chroot"))
    return found


def _check_diskimages(data: Mapping[str, Any]) -> list[Finding]:
    images = list(entries(data, "diskimages", ""))
    found = duplicates(((p, text(i, "name")) for p, i in images), "diskimage")
    parents = {n: text(i, "parent") for _, i in images if (n := text(i, "name"))}
    for path, item in images:
        parent = text(item, "parent")
        if parent is None:
            continue
        if parent not in parents:
            found.append((join_path(path, "parent"),
                          f"parent diskimage '{parent}' is not defined in diskimages"))
            continue
        # Walk up the chain; coming back to this image means a loop, which
        # would make inheriting its settings impossible.
        seen = {text(item, "name")}
        step: str | None = parent
        while step is not None:
            if step in seen:
                found.append((join_path(path, "parent"),
                              f"diskimage parents form a loop through '{step}'"))
                break
            seen.add(step)
            step = parents.get(step)
    return found
