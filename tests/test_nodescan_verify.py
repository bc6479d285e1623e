"""NodeScanner.verify(): the cheap scan of a host whose keys were scanned before (real sshd)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from sshd import SshServer, ensure_sshd, free_port, next_address

from nodepool.nodescan import NodeScanner, NodeScanTimeout, ScanRequest


def finished(req: ScanRequest, timeout: float = 20.0) -> ScanRequest:
    assert req.wait(timeout), f"{req} not done after {timeout}s"
    return req


@pytest.fixture
def scanner() -> Iterator[NodeScanner]:
    ensure_sshd()
    scanner = NodeScanner()
    scanner.start()
    yield scanner
    scanner.stop()


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[SshServer]]:
    servers: list[SshServer] = []
    yield servers
    for server in servers:
        server.stop()


def test_unchanged_host_is_verified_with_one_connection(
        tmp_path: Path, scanner: NodeScanner, made: list[SshServer]) -> None:
    server = SshServer(tmp_path).start()
    made.append(server)
    first = finished(scanner.scan(server.address, server.port, timeout=10))
    assert first.error is None and first.attempts > 1
    again = finished(scanner.verify(server.address, server.port, first.result, timeout=10))
    assert again.error is None
    assert again.result == first.result == server.public_keys
    assert again.attempts == 1     # counted, not timed


def test_host_with_new_keys_is_scanned_in_full(
        tmp_path: Path, scanner: NodeScanner, made: list[SshServer]) -> None:
    # The same address and port, another installation: every key is new.
    old = SshServer(tmp_path / "old").start()
    made.append(old)
    keys = finished(scanner.scan(old.address, old.port, timeout=10)).result
    old.stop()
    new = SshServer(tmp_path / "new", address=old.address, port=old.port).start()
    made.append(new)
    again = finished(scanner.verify(new.address, new.port, keys, timeout=10))
    assert again.error is None
    assert again.result == new.public_keys
    assert not set(again.result) & set(keys)


def test_host_without_the_first_key_type_any_more_is_scanned_in_full(
        tmp_path: Path, scanner: NodeScanner, made: list[SshServer]) -> None:
    old = SshServer(tmp_path / "old").start()
    made.append(old)
    keys = finished(scanner.scan(old.address, old.port, timeout=10)).result
    old.stop()
    new = SshServer(tmp_path / "new", key_types=("rsa",), address=old.address,
                    port=old.port).start()
    made.append(new)
    again = finished(scanner.verify(new.address, new.port, keys, timeout=10))
    assert again.error is None and again.result == new.public_keys


def test_host_that_went_down_fails_as_a_scan_does(scanner: NodeScanner) -> None:
    address = next_address()
    port = free_port(address)
    keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq8lqkmsHnsAzAyE0jAs5nZQd/4qh2SAbxsC7Ib+pUt"]
    req = finished(scanner.verify(address, port, keys, timeout=1))
    assert isinstance(req.error, NodeScanTimeout) and req.result is None


def test_verify_without_known_keys_is_a_scan(
        tmp_path: Path, scanner: NodeScanner, made: list[SshServer]) -> None:
    server = SshServer(tmp_path).start()
    made.append(server)
    req = finished(scanner.verify(server.address, server.port, [], timeout=10))
    assert req.result == server.public_keys
