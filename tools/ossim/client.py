"""A stdlib client for the simulator's control API, and a poll-until helper for tests and benchmarks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class ControlError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"control API answered {status}: {body}")
        self.status = status


class ControlClient:
    """Talks to /_sim on a running simulator (in this process or another)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/") + "/_sim"
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ControlError(exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    # inspection
    def info(self) -> dict[str, Any]:
        return self._call("GET", "")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/state")

    def servers(self) -> list[dict[str, Any]]:
        return self._call("GET", "/servers")["servers"]

    def server(self, server_id: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"/servers/{server_id}")["server"]
        except ControlError as exc:
            if exc.status == 404:
                return None
            raise

    def calls(self) -> dict[str, int]:
        return self._call("GET", "/calls")["calls"]

    def count(self, key: str) -> int:
        """Calls made to one route, e.g. count('GET /compute/v2.1/servers/detail')."""
        return self.calls().get(key, 0)

    def clear_calls(self) -> None:
        self._call("DELETE", "/calls")

    def requests(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._call("GET", f"/requests?limit={limit}")["requests"]

    # faults
    def inject(self, kind: str, **params: Any) -> dict[str, Any]:
        """Add a fault, e.g. inject('create_error', count=2, message='No valid host')."""
        return self._call("POST", "/faults", {"kind": kind, **params})["fault"]

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")["faults"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # settings
    def config(self) -> dict[str, Any]:
        return self._call("GET", "/config")

    def set_timings(self, **timings: float) -> dict[str, Any]:
        return self._call("PATCH", "/config", {"timings": timings})

    def set_quotas(self, **quotas: int) -> dict[str, Any]:
        return self._call("PATCH", "/config", {"quotas": quotas})

    # objects
    def force_status(self, server_id: str, status: str, message: str = "") -> dict[str, Any]:
        return self._call("POST", f"/servers/{server_id}/status", {"status": status, "message": message})

    def finish_delete(self, server_id: str) -> None:
        self._call("POST", f"/servers/{server_id}/finish-delete", {})

    def leak_port(self, **spec: Any) -> dict[str, Any]:
        return self._call("POST", "/ports", spec)["port"]

    def revoke_tokens(self) -> None:
        self._call("DELETE", "/tokens")

    def reset(self) -> None:
        self._call("POST", "/reset", {})


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01,
             what: str = "condition") -> T:
    """Poll until condition() is truthy and return it; raise TimeoutError naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
