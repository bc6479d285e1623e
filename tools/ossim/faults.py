"""The fault queue: injected create/delete failures, HTTP errors, latency and rate limits."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from .models import Fault

# kind -> what it does; the control API rejects anything else.
KINDS = {
    "create_error": "next N server creates end in ERROR with a fault (message)",
    "create_timeout": "next N server creates stay in BUILD forever",
    "create_quota": "next N server creates get Nova's 403 quota-exceeded",
    "create_500": "next N server creates get a 500 computeFault",
    "delete_500": "next N server deletes get a 500",
    "delete_hang": "next N deleted servers stay in task_state deleting forever",
    "delete_error": "next N deleted servers go to ERROR instead of going away",
    "http_error": "next N calls matching method/path get HTTP status",
    "rate_limit": "next N calls (or those over rate/s) matching method/path get 429 + Retry-After",
    "latency": "next N calls matching method/path are answered after seconds",
}

SERVER_KINDS = ("create_error", "create_timeout", "create_quota", "create_500",
                "delete_500", "delete_hang", "delete_error")


def build_fault(spec: dict[str, Any]) -> Fault:
    """Validate a control-API fault description; raise ValueError saying what is wrong."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    known = {"kind", "count", "message", "status", "method", "path", "retry_after", "seconds", "rate", "burst"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown fault field(s) {sorted(unknown)}; known: {sorted(known)}")
    fault = Fault(kind=kind)
    if "count" in spec:
        fault.count = None if spec["count"] is None else int(spec["count"])
    elif kind == "rate_limit" and spec.get("rate"):
        fault.count = None  # a rate applies until cleared
    for name in ("message", "method", "path"):
        if spec.get(name) is not None:
            setattr(fault, name, str(spec[name]))
    if "status" in spec:
        fault.status = int(spec["status"])
    for name in ("retry_after", "seconds", "rate", "burst"):
        if name in spec:
            setattr(fault, name, float(spec[name]))
    if fault.method:
        fault.method = fault.method.upper()
    if fault.path:
        re.compile(fault.path)  # fail at injection time, not on the next request
    if kind == "http_error" and "status" not in spec:
        raise ValueError("http_error needs a status")
    if kind == "rate_limit" and fault.rate:
        fault.burst = fault.burst or max(1.0, fault.rate)
        fault.tokens = fault.burst
    return fault


class FaultQueue:
    """Faults in injection order; each call takes the first that matches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def take(self, kinds: tuple[str, ...], method: str = "", path: str = "") -> Fault | None:
        """Consume one use of the first matching fault of the given kinds."""
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds or not _matches(fault, method, path):
                    continue
                if fault.kind == "rate_limit" and fault.rate:
                    if _bucket_allows(fault):
                        continue  # under the rate: this call passes
                    return fault
                self._use(fault)
                return fault
        return None

    def _use(self, fault: Fault) -> None:
        if fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                self._faults.remove(fault)


def _matches(fault: Fault, method: str, path: str) -> bool:
    if fault.method and fault.method != method:
        return False
    if fault.path and not re.search(fault.path, path):
        return False
    return True


def _bucket_allows(fault: Fault) -> bool:
    now = time.monotonic()
    fault.tokens = min(fault.burst, fault.tokens + (now - fault.last_refill) * fault.rate)
    fault.last_refill = now
    if fault.tokens >= 1.0:
        fault.tokens -= 1.0
        return True
    return False
