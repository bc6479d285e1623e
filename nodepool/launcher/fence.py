"""Fencing: an owner that may have lost its lease makes no cloud call until it knows it has not.

A provider lease is an ephemeral znode of the session that won it. ZooKeeper
expires a session only after it has heard nothing from the client for the
session timeout T (measured on the server). So a request *sent* at time s
and answered on the same session proves the session alive until at least
s + T, however late the answer is read (a process stopped with SIGSTOP
reads an old answer when it continues). `SessionProof` sends such a probe
every T/5 from a thread of its own and keeps

    proven_until = send time of the last answered probe + MARGIN * T

(MARGIN < 1 leaves room for the server's and our clock running at slightly
different rates and for the server measuring from a later moment). A lease
is *held for sure* while the client's session is still the one that won it,
the connection is up, and the monotonic clock is before `proven_until`.

Who checks:
* every cloud call, right before it is sent (`Adapter.fence`, called by
  the driver after its rate limiter): it waits up to T/2 for a fresh proof
  and otherwise raises `LeaseUnsure`, a transient error: the step backs off
  and is tried again, or the worker is stopped because the lease is gone;
* the provider loop, before each pass: a worker whose lease is not held for
  sure skips the pass (it neither decides nor writes) and looks again when
  the next probe is answered.

ZooKeeper writes need more than a clock: every write a worker makes that
depends on owning a node or request is conditional, in the same
transaction, on a lock contender znode of ours (a `check` or a `delete` of
it, effects.py). Contenders are ephemeral nodes of the session that took
them, sequence-numbered, never re-created: once that session is gone no
such write can apply, whatever our clock says. doc/internals.md has the
whole argument, and what is left (a cloud call already on its way when the
process stops) in doc/reliability.md.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from kazoo.protocol.states import KazooState

from nodepool import errors
from nodepool.zk.client import ZooKeeperClient

log = logging.getLogger("nodepool.launcher.fence")

MARGIN = 0.6           # of the session timeout: how long an answered probe proves the session
PROBE_EVERY = 0.2      # of the session timeout: how often a probe is sent
WAIT_FOR_PROOF = 0.5   # of the session timeout: how long a cloud call waits for a proof


class LeaseUnsure(errors.TransientError):
    """The lease may be lost (no recent proof that its session lives): no cloud call now."""


class SessionProof:
    """Keeps proving the ZooKeeper session alive; answers "is this session proven now?"."""

    def __init__(self, zk: ZooKeeperClient, probe_path: str = "/",
                 on_round_trip: Callable[[str, float], None] | None = None):
        self.zk = zk
        self.probe_path = probe_path
        self._on_round_trip = on_round_trip   # metrics: each answered probe's round trip
        self.session_id: int | None = None   # the session the last proof was for
        self.proven_until = 0.0               # monotonic
        self.probes_answered = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def timeout(self) -> float:
        """The session timeout in seconds (as negotiated with the server)."""
        return self.zk.kazoo.session_timeout

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="session-proof", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def current_session(self) -> int | None:
        kazoo = self.zk.kazoo
        if kazoo.state != KazooState.CONNECTED:
            return None
        return kazoo.client_id[0] if kazoo.client_id else None

    def proven(self, session_id: int | None) -> bool:
        """Is `session_id` the client's live session, proven within MARGIN * T?"""
        return (session_id is not None and self.session_id == session_id
                and self.current_session() == session_id
                and time.monotonic() < self.proven_until)

    def wait_proven(self, session_id: int | None, timeout: float) -> bool:
        """Wait up to `timeout` for `proven(session_id)` (a probe is due every T/5)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.proven(session_id):
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    return False
                self._cond.notify_all()   # wake the prober: ask for a proof now
                self._cond.wait(min(left, 0.05))
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            period = self.timeout * PROBE_EVERY
            sent_at = time.monotonic()
            self._probe(sent_at, period)
            with self._cond:
                if self._stopping:
                    return
                self._cond.wait(max(0.0, sent_at + period - time.monotonic()))

    def _probe(self, sent_at: float, period: float) -> None:
        session = self.current_session()
        if session is None:
            return
        try:
            self.zk.kazoo.exists_async(self.probe_path).get(timeout=period)
        except Exception as e:   # connection lost or slow: no proof this time
            log.debug("Session probe failed: %r", e)
            return
        if self._on_round_trip is not None:
            self._on_round_trip("probe", time.monotonic() - sent_at)
        if self.current_session() != session:   # answered, but a new session meanwhile
            return
        with self._cond:
            before = self.proven_until if self.session_id == session else 0.0
            self.session_id = session
            self.proven_until = max(before, sent_at + MARGIN * self.timeout)
            self.probes_answered += 1
            self._cond.notify_all()


class LeaseFence:
    """One lease's fence: held for sure while its session is the client's, proven."""

    def __init__(self, proof: SessionProof, name: str, session_id: int | None):
        self.proof = proof
        self.name = name
        self.session_id = session_id

    def holds(self) -> bool:
        return self.proof.proven(self.session_id)

    def check(self) -> None:
        """Before a cloud call: return once the lease is held for sure, else LeaseUnsure."""
        if self.holds():
            return
        if not self.proof.wait_proven(self.session_id, self.proof.timeout * WAIT_FOR_PROOF):
            raise LeaseUnsure(f"lease {self.name}: no proof that it is still ours "
                              f"(its session is not proven alive); no cloud call",
                              retry_after=self.proof.timeout * PROBE_EVERY)


class NoFence:
    """For parts run without a lease (tests, tools): always held."""

    name = ""
    session_id = None

    def holds(self) -> bool:
        return True

    def check(self) -> None:
        return None
