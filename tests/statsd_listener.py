"""A statsd server in miniature: a real UDP socket on 127.0.0.1 that keeps every line it gets."""

from __future__ import annotations

import socket
import threading
from typing import NamedTuple

from requestor import wait_for


class Stat(NamedTuple):
    name: str
    value: str
    kind: str          # c, g, ms
    sender: tuple      # the (host, port) the packet came from


class StatsdListener:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stats: list[Stat] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="statsd-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, sender = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                with self._lock:
                    self.stats.append(Stat(name, value, kind.split("|")[0], sender))

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def seen(self, name: str | None = None, kind: str | None = None,
             prefix: str | None = None) -> list[Stat]:
        with self._lock:
            return [s for s in self.stats if (name is None or s.name == name)
                    and (kind is None or s.kind == kind)
                    and (prefix is None or s.name.startswith(prefix))]

    def wait(self, name: str, kind: str, timeout: float = 15.0) -> list[Stat]:
        return wait_for(lambda: self.seen(name, kind), timeout=timeout,
                        what=f"statsd {name}|{kind}")
