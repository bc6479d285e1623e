"""Hostile HTTP clients never stall the launcher: hand-overs go on while the web is abused."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time

import pytest
from requestor import wait_for

FLOOD_THREADS = 4
FLOOD_RATE = 250          # requests per second per thread: ~1,000 in all
FLOOD_SECONDS = 3.0       # at least; the flood lasts until the hand-overs below are done
HANDOVERS = 5             # nodes handed over to the requestor during the flood
IDLE_CONNECTIONS = 200
PATHS = ("/node-list", "/request-list", "/label-list", "/ready", "/node-list?fields=id,state")


class Flood:
    """Threads sending GETs over keep-alive connections at a bounded rate, counting answers."""

    def __init__(self, port: int):
        self.port = port
        self.stop = threading.Event()
        self.answers: dict[int, int] = {}
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                         name=f"flood-{i}") for i in range(FLOOD_THREADS)]

    def start(self) -> None:
        self.started = time.monotonic()
        for t in self.threads:
            t.start()

    def finish(self) -> float:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return time.monotonic() - self.started

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.answers.values())

    def _run(self, index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = 0
        began = time.monotonic()
        while not self.stop.is_set():
            path = PATHS[(index + sent) % len(PATHS)]
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as e:
                with self._lock:
                    self.failures.append(f"{path}: {type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            sent += 1
            with self._lock:
                self.answers[status] = self.answers.get(status, 0) + 1
            ahead = sent / FLOOD_RATE - (time.monotonic() - began)
            if ahead > 0:
                self.stop.wait(ahead)
        conn.close()


def slow_reader(port: int, stop: threading.Event, got: list[int]) -> None:
    """Asks for the node list, then reads its answer one byte at a time, slowly."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.sendall(b"GET /node-list HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        while not stop.is_set():
            if not sock.recv(1):
                break
            got[0] += 1
            stop.wait(0.01)
    finally:
        sock.close()


@pytest.fixture
def web_launcher(env):
    env.write_config(min_ready=1, max_servers=10, web=True)
    launcher = env.start_launcher(webapp=True)
    wait_for(lambda: launcher.web is not None and any(
        n.state.value == "ready" for n in launcher.ctx.cache.nodes()), timeout=20,
        what="a min-ready node")
    return launcher


def test_handovers_continue_while_clients_abuse_the_web(web_launcher, env):
    port = web_launcher.web.port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10)
            for _ in range(IDLE_CONNECTIONS)]   # connect and send nothing
    stop_slow = threading.Event()
    slow_got = [0]
    slow = threading.Thread(target=slow_reader, args=(port, stop_slow, slow_got), daemon=True)
    slow.start()
    flood = Flood(port)
    flood.start()
    handed_over = 0
    try:
        while handed_over < HANDOVERS or time.monotonic() - flood.started < FLOOD_SECONDS:
            env.requestor.request_and_use(["small"], timeout=30)
            handed_over += 1
        during = flood.total
    finally:
        elapsed = flood.finish()
        stop_slow.set()
        slow.join(10)
        for sock in idle:
            sock.close()
    print(f"\n{handed_over} hand-overs during {elapsed:.1f} s of flood: {flood.total} "
          f"answers ({flood.total / elapsed:.0f}/s), {slow_got[0]} bytes read slowly, "
          f"{IDLE_CONNECTIONS} idle connections")
    assert handed_over >= HANDOVERS
    assert during > 0 and flood.failures == []
    assert set(flood.answers) == {200}, flood.answers
    assert slow_got[0] > 0   # the slow reader was being served, not refused
    # Afterwards the web still answers, at once.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/ready")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"OK")
    conn.close()


def test_oversized_and_garbage_requests_get_an_answer_not_a_stall(web_launcher):
    port = web_launcher.web.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.0 431 Request Header Fields Too Large"), answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n")
        answer = sock.recv(200)
    assert answer == b"" or b" 400 " in answer[:20], answer
    for _ in range(20):   # ask, then reset the connection without reading: no error logged
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /node-list HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/ready")
    assert conn.getresponse().status == 200
    conn.close()
