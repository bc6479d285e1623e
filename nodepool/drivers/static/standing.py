"""The static driver's judgement of registered nodes: which host slot each occupies, and
whether it still matches the config's slot (behind Adapter.standing_slot/standing_outdated).

Each standing instance carries its slot's unique key in `metadata["standing"]`
and the core records it in the node's `driver_data["standing"]`; the node's
`external_id` is the host name, as Nodepool writes it, shared by a host's slots.

After a reload a static host may be gone (removed, or fewer max-parallel-jobs)
or changed (labels, user, port...). Nodepool unregisters the ready nodes of a
removed host and updates those of a changed one; here both are unregistered
(deleted, which frees nothing on the host) and a changed slot is registered
again with the new attributes and a fresh keyscan. A ready node written
before external_id was the host name (it held the slot key) is registered
again the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from nodepool.drivers.adapter import STANDING, Instance
from nodepool.model import Node

# Node fields that come from the host's config entry.
_FIELDS = ("interface_ip", "username", "connection_port", "connection_type", "shell_type",
           "python_path")


Place = tuple[str | None, str | None, int | None, int | None]


def standing_id(node: Node) -> str | None:
    """The host slot a node was registered for (None: not registered by us); the
    launcher core records it as driver_data {"standing": <slot key>}."""
    return (node.driver_data or {}).get(STANDING)


def place(item: Node | Instance) -> Place:
    """Where a slot is: host, user, port and slot number."""
    return (item.interface_ip or item.hostname, item.username, item.connection_port,
            item.slot)


def outdated(node: Node, standing: Mapping[str, Instance]) -> str | None:
    """Why `node` no longer stands for a configured slot, or None when it still does."""
    slot = standing_id(node)
    if slot is None:
        return None
    instance = standing.get(slot)
    if instance is None:
        return f"static host slot {slot} removed from the config"
    labels = list((instance.metadata or {}).get("labels") or [])
    if labels and list(node.type) != labels:
        return f"static host slot {slot} changed in the config (labels)"
    for field in _FIELDS:
        if getattr(node, field, None) != getattr(instance, field, None):
            return f"static host slot {slot} changed in the config ({field})"
    if instance.host_keys is not None and \
            sorted(node.host_keys or []) != sorted(instance.host_keys):
        return f"static host slot {slot} changed in the config (host-key)"
    if node.external_id != instance.external_id:
        return (f"static host slot {slot} recorded with external_id {node.external_id!r}, "
                f"registered again as {instance.external_id!r}")
    return None


def occupied_slot(node: Node, standing: Mapping[str, Instance],
                  by_place: Mapping[Place, str]) -> str | None:
    """The configured slot `node` stands on: its recorded slot key, or, for a node
    recorded under a key the config no longer has (removed, or a key from before an
    upgrade) or under none (registered by Nodepool's static driver), the configured
    slot with its host, user, port and slot number, so one host slot never has two
    nodes. `by_place` maps `place()` of each standing slot to its key."""
    slot = standing_id(node)
    if slot in standing:
        return slot
    return by_place.get(place(node))
