"""kazoo sessions of the benchmark: TLS and chroot from the options, every request counted."""

from __future__ import annotations

import select
import threading
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import SequentialThreadingHandler

CONNECT_TIMEOUT = 15.0


class CountingClient(KazooClient):
    """A KazooClient that counts the requests it sends (each one is a round trip to ZooKeeper;
    a transaction counts once; pings are not counted)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = 0
        self._sent_lock = threading.Lock()

    def _call(self, request: Any, async_object: Any) -> Any:  # kazoo's single entry for requests
        with self._sent_lock:
            self.sent += 1
        return super()._call(request, async_object)


class SelectHandler(SequentialThreadingHandler):
    """kazoo's threading handler waiting with select(2).

    kazoo's own `select` builds and closes an epoll selector for every wait of its
    connection loop: a third of the benchmark's CPU at 200 requests/s, taken from
    the launcher it measures on a small machine. The benchmark's few descriptors
    are far below select's limit. Nothing the server sees changes.
    """

    def select(self, *args: Any) -> Any:
        return select.select(*args)


@dataclass(frozen=True)
class ZkOptions:
    hosts: str
    chroot: str = ""
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    timeout: float = 30.0  # session timeout, seconds

    @property
    def tls(self) -> bool:
        return bool(self.cert or self.key or self.ca)

    def connect(self) -> CountingClient:
        """A started client rooted at the chroot; raises kazoo's error when it cannot connect."""
        chroot = "/" + self.chroot.strip("/") if self.chroot.strip("/") else ""
        kwargs: dict[str, Any] = {}
        if self.tls:
            kwargs = {"use_ssl": True, "verify_certs": bool(self.ca), "certfile": self.cert,
                      "keyfile": self.key, "ca": self.ca}
        client = CountingClient(hosts=self.hosts + chroot, timeout=self.timeout,
                                handler=SelectHandler(), **kwargs)
        client.start(timeout=CONNECT_TIMEOUT)
        return client


@dataclass
class Session:
    """One kazoo session and the requestor id (system id) it speaks as."""

    client: CountingClient
    requestor: str

    def close(self) -> None:
        try:
            self.client.stop()
        finally:
            self.client.close()
