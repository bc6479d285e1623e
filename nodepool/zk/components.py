"""Component registration (launcher and pool), re-created after a lost session."""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any

from kazoo.exceptions import NoNodeError

from nodepool import __version__
from nodepool.zk import paths
from nodepool.zk.client import NEW_SESSION, ZooKeeperClient

log = logging.getLogger("nodepool.zk.components")

LAUNCHER = "launcher"
POOL = "pool"


class Component:
    """One ephemeral, sequential component znode and the JSON it should hold."""

    def __init__(self, registry: ComponentRegistry, kind: str, data: dict[str, Any]):
        self.registry = registry
        self.kind = kind
        self.data = data
        self.path: str | None = None
        self._unsent = False    # an update was lost with the connection: send it again
        self._lock = threading.Lock()

    def _create(self) -> None:
        kazoo = self.registry.zk.kazoo
        prefix = paths.component_prefix(self.kind, self.registry.hostname)
        self.path = kazoo.create(prefix, json.dumps(self.data).encode("utf-8"),
                                 ephemeral=True, sequence=True, makepath=True)

    def update(self, **changes: Any) -> None:
        """Change fields (e.g. `paused`) and send them if anything changed.

        Sent without waiting for the answer: a provider loop publishing a pause
        goes on at once. Later requests of this session (a read, the next update)
        are answered after it, in the order sent, as ZooKeeper does per session."""
        with self._lock:
            if not self._unsent and all(self.data.get(k) == v for k, v in changes.items()):
                return
            self.data.update(changes)
            path = self.path
            if path is None:
                return
            self._unsent = False
            result = self.registry.zk.kazoo.set_async(path, json.dumps(self.data).encode("utf-8"))
        result.rawlink(lambda r: self._written(path, r))

    def _written(self, path: str, result) -> None:
        """The answer to an update (on kazoo's callback thread)."""
        try:
            result.get()
        except NoNodeError:
            # The session was lost; the registry re-creates it with the current data
            # (unless it already has: then the path is a new one).
            with self._lock:
                if self.path == path:
                    self.path = None
        except Exception as e:   # connection trouble: the next update() sends it again
            log.debug("Updating %s component %s failed: %s", self.kind, path, e)
            self._unsent = True

    def unregister(self) -> None:
        with self._lock:
            self.registry._forget(self)
            if self.path is not None:
                self.registry.zk.delete_bounded(self.path)
            self.path = None


class ComponentRegistry:
    """Registers components and re-creates them when ZooKeeper gives a new session."""

    def __init__(self, zk: ZooKeeperClient, hostname: str | None = None):
        self.zk = zk
        self.hostname = hostname or socket.gethostname()   # as Nodepool names its components
        self._components: list[Component] = []
        self._lock = threading.Lock()
        zk.add_listener(self._on_state)

    def base_data(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "hostname": self.hostname, "state": "running",
                "version": __version__, "model_api": 0}

    def register_launcher(self) -> Component:
        return self.register(LAUNCHER, self.base_data(LAUNCHER))

    def register_pool(self, pool_id: str, provider_name: str, pool_name: str,
                      supported_labels: list[str], priority: int = 100,
                      paused: bool = False) -> Component:
        data = self.base_data(POOL)
        data.update(id=pool_id, name=pool_name, provider_name=provider_name,
                    supported_labels=sorted(supported_labels), priority=priority,
                    paused=paused)
        return self.register(POOL, data)

    def register(self, kind: str, data: dict[str, Any]) -> Component:
        component = Component(self, kind, data)
        with component._lock:
            component._create()
        with self._lock:
            self._components.append(component)
        log.info("Registered %s component %s", kind, component.path)
        return component

    def _forget(self, component: Component) -> None:
        with self._lock:
            if component in self._components:
                self._components.remove(component)

    def _on_state(self, state: str) -> None:
        if state != NEW_SESSION:
            return
        with self._lock:
            components = list(self._components)
        for component in components:
            with component._lock:
                log.warning("Re-registering %s component after a lost session", component.kind)
                component._create()

    def close(self) -> None:
        self.zk.remove_listener(self._on_state)
        for component in list(self._components):
            component.unregister()


def list_components(zk: ZooKeeperClient, kind: str) -> list[dict[str, Any]]:
    """The JSON of every registered component of `kind` (ours and other launchers')."""
    kazoo = zk.kazoo
    try:
        names = kazoo.get_children(paths.components(kind))
    except NoNodeError:
        return []
    pending = [(n, kazoo.get_async(f"{paths.components(kind)}/{n}")) for n in names]
    out = []
    for name, result in pending:
        try:
            raw, _ = result.get()
        except NoNodeError:
            continue
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            log.warning("Ignoring unreadable %s component %s", kind, name)
            continue
        data["_name"] = name
        out.append(data)
    return out
