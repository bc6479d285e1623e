"""Tests of the non-blocking ssh host-key scanner against real sshd processes."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

# tests/ is on sys.path under pytest (rootdir conftest, no __init__.py).
from sshd import SshServer, ensure_sshd, free_port, next_address

from nodepool.nodescan import (
    DEFAULT_KEY_TYPES,
    NodeScanCancelled,
    NodeScanner,
    NodeScanTimeout,
    ScanRequest,
    normalize_key_types,
)

ServerFactory = Callable[..., SshServer]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `condition` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.005)


def finished(req: ScanRequest, timeout: float = 10.0) -> ScanRequest:
    assert req.wait(timeout), f"{req} not done after {timeout}s"
    return req


@pytest.fixture(scope="session", autouse=True)
def _sshd_installed() -> None:
    ensure_sshd()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFactory]:
    """Make SshServers (not started); every one is stopped by pid at teardown."""
    made: list[SshServer] = []

    def make(**kwargs: object) -> SshServer:
        server = SshServer(tmp_path, **kwargs)  # type: ignore[arg-type]
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def scanner() -> Iterator[NodeScanner]:
    scanner = NodeScanner()
    scanner.start()
    yield scanner
    scanner.stop()


def test_scan_returns_every_host_key_type_the_server_has(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    server = servers().start()
    req = finished(scanner.scan(server.address, server.port, timeout=10))
    assert req.error is None
    # ed25519, then ecdsa, then rsa: the scanner's fixed order, as generated.
    assert req.result == server.public_keys
    assert [k.split()[0] for k in req.result] == [
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]


def test_scan_of_a_listening_sshd_takes_one_connection_per_host_key(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    # What makes a scan fast is that no attempt is wasted (refused, timed out, retried after a
    # backoff): each connection yields one new key type. Counted, not timed, so load cannot flake it.
    server = servers().start()
    for _ in range(5):
        req = finished(scanner.scan(server.address, server.port, timeout=10))
        assert req.result == server.public_keys
        # One connection per key, and one more when a type scanned for is missing: the server closes it.
        missing = len(DEFAULT_KEY_TYPES) > len(server.public_keys)
        assert req.attempts == len(server.public_keys) + missing, (req.attempts, req.duration)


def test_server_with_only_ed25519_yields_only_that_key(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    server = servers(key_types=("ed25519",)).start()
    req = finished(scanner.scan(server.address, server.port, timeout=10))
    assert req.error is None
    assert req.result == server.public_keys
    assert req.result[0].startswith("ssh-ed25519 AAAA")


def test_key_types_limits_what_is_scanned(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    server = servers().start()
    ed25519, ecdsa, rsa = server.public_keys
    req = finished(scanner.scan(server.address, server.port, key_types=["rsa", "ecdsa"]))
    assert req.result == [ecdsa, rsa]
    req = finished(scanner.scan(server.address, server.port, key_types=["ssh-ed25519"]))
    assert req.result == [ed25519]


def test_many_concurrent_scans_complete_from_one_thread(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    fleet = [servers(key_types=("ed25519", "ecdsa")) for _ in range(5)]
    for server in fleet:
        server.start(wait=False)
    for server in fleet:
        server.wait_listening()
    callback_threads: set[int] = set()
    reqs: list[tuple[SshServer, ScanRequest]] = []
    lock = threading.Lock()

    def on_done(req: ScanRequest) -> None:
        with lock:
            callback_threads.add(threading.get_ident())

    def submit(server: SshServer) -> None:
        for _ in range(3):
            req = scanner.scan(server.address, server.port, timeout=20, on_done=on_done)
            with lock:
                reqs.append((server, req))

    # scan() is called from several threads at once.
    submitters = [threading.Thread(target=submit, args=(s,)) for s in fleet]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join()
    assert len(reqs) == 15
    for server, req in reqs:
        finished(req, 20)
        assert req.error is None, req.error
        assert req.result == server.public_keys
    wait_for(lambda: len(callback_threads) == 1, what="callbacks")
    scanner_threads = [t for t in threading.enumerate() if t.name == "nodescan"]
    assert len(scanner_threads) == 1
    assert callback_threads == {scanner_threads[0].ident}


def test_nothing_listening_fails_after_the_timeout_with_a_clear_error(
        scanner: NodeScanner) -> None:
    address = next_address()
    port = free_port(address)
    req = finished(scanner.scan(address, port, timeout=1.0), 10)
    assert req.result is None
    assert isinstance(req.error, NodeScanTimeout)
    message = str(req.error)
    assert f"{address}:{port}" in message
    assert "timed out after 1s" in message
    assert "ConnectionRefusedError" in message
    assert (req.error.host, req.error.port) == (address, port)
    assert isinstance(req.error.last_error, ConnectionRefusedError)
    assert req.attempts > 2  # it kept retrying
    assert 1.0 <= req.duration < 5.0   # not before its timeout; ended by it, not hung


def test_server_that_never_speaks_times_out_per_attempt() -> None:
    address = next_address()
    with socket.socket() as listener:
        # The kernel completes connections into the backlog; nobody answers.
        listener.bind((address, 0))
        listener.listen(16)
        scanner = NodeScanner(attempt_timeout=0.2)
        scanner.start()
        try:
            req = finished(scanner.scan(address, listener.getsockname()[1], timeout=1.0))
        finally:
            scanner.stop()
    assert isinstance(req.error, NodeScanTimeout)
    assert "no answer within the attempt timeout" in str(req.error)
    assert req.duration < 5.0   # ended by the 1 s timeout, not hung


def test_server_without_the_requested_key_type_times_out_with_a_hint(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    server = servers(key_types=("ed25519",)).start()
    req = finished(scanner.scan(server.address, server.port, timeout=1.0, key_types=["rsa"]))
    assert isinstance(req.error, NodeScanTimeout)
    assert "may have no host key of the requested types: ssh-rsa" in str(req.error)


def test_sshd_started_after_the_scan_began_is_found(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    server = servers()  # the node is still booting: nothing listens yet
    req = scanner.scan(server.address, server.port, timeout=20)
    wait_for(lambda: req.attempts >= 3, what="a few refused attempts")
    assert not req.done
    server.start()
    finished(req, 20)
    assert req.error is None
    assert req.result == server.public_keys


def test_stop_with_scans_outstanding_returns_promptly() -> None:
    scanner = NodeScanner()
    scanner.start()
    address = next_address()
    callbacks: list[ScanRequest] = []
    reqs = [scanner.scan(address, free_port(address), timeout=600, on_done=callbacks.append)
            for _ in range(10)]
    wait_for(lambda: all(r.attempts >= 1 for r in reqs), what="first attempts")
    start = time.monotonic()
    scanner.stop()
    assert time.monotonic() - start < 5.0   # not the scans' 600 s timeout
    for req in reqs:
        assert req.done
        assert isinstance(req.error, NodeScanCancelled)
        assert "scanner stopped" in str(req.error)
    assert sorted(map(id, callbacks)) == sorted(map(id, reqs))
    assert not any(t.name == "nodescan" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="not running"):
        scanner.scan(address, 22)


def test_cancel_ends_one_scan_and_leaves_the_others(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    address = next_address()
    doomed = scanner.scan(address, free_port(address), timeout=600)
    wait_for(lambda: doomed.attempts >= 1, what="first attempt")
    doomed.cancel()
    finished(doomed, 2)
    assert isinstance(doomed.error, NodeScanCancelled)
    assert "cancelled by caller" in str(doomed.error)
    server = servers(key_types=("ed25519",)).start()
    req = finished(scanner.scan(server.address, server.port))
    assert req.result == server.public_keys


def test_on_done_runs_once_with_the_result(
        servers: ServerFactory, scanner: NodeScanner) -> None:
    server = servers(key_types=("ed25519",)).start()
    calls: list[ScanRequest] = []
    woken = threading.Event()

    def on_done(req: ScanRequest) -> None:
        calls.append(req)
        woken.set()

    req = scanner.scan(server.address, server.port, on_done=on_done)
    assert woken.wait(10)
    assert calls == [req] and req.done and req.result == server.public_keys
    req.cancel()  # too late: nothing changes
    assert calls == [req] and req.error is None


def test_scan_before_start_and_unknown_key_types_are_refused() -> None:
    scanner = NodeScanner()
    with pytest.raises(RuntimeError, match="call start"):
        scanner.scan("127.0.0.1", 22)
    with pytest.raises(ValueError, match="unknown ssh host key type 'dsa'"):
        normalize_key_types(["dsa"])
    assert normalize_key_types(["ecdsa", "ed25519"]) == (
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


def test_probe_succeeds_once_the_port_accepts_and_speaks_no_ssh(scanner: NodeScanner) -> None:
    """A winrm host's check: a TCP connection, no handshake, no keys."""
    address = next_address()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, 0))
        port = sock.getsockname()[1]
        req = scanner.probe(address, port, timeout=20)
        wait_for(lambda: req.attempts >= 1, what="a first refused attempt")
        assert not req.done
        sock.listen(1)
        assert finished(req, 20).error is None and req.result == []


def test_probe_of_a_closed_port_times_out_naming_the_port_check(scanner: NodeScanner) -> None:
    address = next_address()
    req = finished(scanner.probe(address, free_port(address), timeout=0.5))
    assert isinstance(req.error, NodeScanTimeout)
    assert str(req.error).startswith(f"port check of {address}:")
