"""The launcher on a 3-server ZooKeeper ensemble: losing the leader under load, an expired session."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, NoNodeError
from kazoo.recipe.lock import Lock
from plugins.launcher_env import BASE, LauncherEnv, passes_go_by
from requestor import NODES, REQUESTS, wait_for
from zkhelpers import ZK_HEADER, expire_session

from nodepool.launcher.daemon import Launcher
from nodepool.launcher.spread import ProviderFilter, assign

LEASE = "/nodepool/launcher/provider-lease/fake1"
SESSION_TIMEOUT = 4  # the launcher's zookeeper-timeout here: a failover must fit in it
assert BASE.startswith(ZK_HEADER)
BODY = BASE[len(ZK_HEADER):].replace("zookeeper-timeout: 10", f"zookeeper-timeout: {SESSION_TIMEOUT}")


def ensemble_yaml(tls: dict[str, Any], **fields: Any) -> str:
    """launcher_env's nodepool.yaml with all three servers in zookeeper-servers."""
    servers = "".join(f"  - host: {host}\n    port: {port}\n    chroot: {tls['chroot']}\n"
                      for host, port in (hp.rsplit(":", 1) for hp in tls["hosts"].split(",")))
    return (f"zookeeper-servers:\n{servers}zookeeper-tls:\n  cert: {tls['cert']}\n"
            f"  key: {tls['key']}\n  ca: {tls['ca']}\n" + BODY.format(**fields))


class EnsembleEnv(LauncherEnv):
    """launcher_env's LauncherEnv with a nodepool.yaml that names every member of the ensemble."""

    def write_config(self, min_ready: int = 0, max_servers: int = 10, retries: int = 3,
                     launch_timeout: int = 60, extra: str = "") -> str:
        with open(self.config_path, "w") as f:
            f.write(ensemble_yaml(self.zk_tls, min_ready=min_ready, max_servers=max_servers,
                                  retries=retries, launch_timeout=launch_timeout) + extra)
        return self.config_path


@pytest.fixture
def ens_env(ensemble_tls: dict[str, Any], tmp_path: Any) -> Iterator[EnsembleEnv]:
    kazoo = KazooClient(hosts=ensemble_tls["hosts"] + ensemble_tls["chroot"], use_ssl=True,
                        certfile=ensemble_tls["cert"], keyfile=ensemble_tls["key"],
                        ca=ensemble_tls["ca"])
    kazoo.start(timeout=10)
    env = EnsembleEnv(ensemble_tls, tmp_path, kazoo)
    try:
        yield env
    finally:
        env.stop()
        kazoo.stop()
        kazoo.close()


class RequestsNotServed(AssertionError):
    """Requests of the stream stayed outstanding past the deadline (the launcher dropped them)."""


class Stream:
    """A CI master under load: keeps `depth` requests in flight and uses every node it gets.

    Runs on its own thread. Every ZooKeeper call survives a connection loss (a server died):
    reads and writes are retried, and a create whose answer was lost is found by its tag.
    """

    def __init__(self, kazoo: KazooClient, launcher: Launcher | None = None,
                 labels: tuple[str, ...] = ("small",), depth: int = 4):
        self.kazoo, self.launcher, self.labels, self.depth = kazoo, launcher, list(labels), depth
        self.outstanding: dict[str, float] = {}          # request id -> submitted at
        self.handed: dict[str, list[str]] = {}           # fulfilled request id -> its nodes
        self.failed: dict[str, dict] = {}
        self.fulfilled_at: list[float] = []
        self.submitting = True
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    @property
    def done(self) -> int:
        return len(self.handed) + len(self.failed)

    def _submit(self) -> str:
        tag = uuid.uuid4().hex
        body = {"state": "requested", "state_time": time.time(), "node_types": self.labels,
                "nodes": [], "declined_by": [], "reuse": True, "requestor": "zuul-stream",
                "requestor_data": {"tag": tag}, "provider": None, "relative_priority": 0,
                "event_id": None, "created_time": time.time(), "tenant_name": None}
        try:
            path = self.kazoo.create(f"{REQUESTS}/200-", json.dumps(body).encode(),
                                     sequence=True, makepath=True)
            return path.rsplit("/", 1)[1]
        except ConnectionLoss:  # created or not: look for it by its tag
            found = self.kazoo.retry(self._find, tag)
            return found or self._submit()

    def _find(self, tag: str) -> str | None:
        for rid in self.kazoo.get_children(REQUESTS):
            try:
                data = json.loads(self.kazoo.get(f"{REQUESTS}/{rid}")[0])
            except NoNodeError:
                continue
            if data.get("requestor_data", {}).get("tag") == tag:
                return rid
        return None

    def _get(self, path: str) -> dict | None:
        try:
            return json.loads(self.kazoo.retry(self.kazoo.get, path)[0])
        except NoNodeError:
            return None

    def _set_node(self, node_id: str, **changes: Any) -> None:
        def update() -> None:
            data = json.loads(self.kazoo.get(f"{NODES}/{node_id}")[0])
            data.update(changes)
            self.kazoo.set(f"{NODES}/{node_id}", json.dumps(data).encode())
        self.kazoo.retry(update)

    def _use(self, rid: str, request: dict) -> None:
        """Zuul's part: lock the nodes, check they are ours, delete the request, use, return."""
        locks = []
        for node_id in request["nodes"]:
            lock = Lock(self.kazoo, f"{NODES}/{node_id}/lock")
            assert lock.acquire(timeout=30), f"could not lock node {node_id}"
            locks.append(lock)
            node = self._get(f"{NODES}/{node_id}")
            assert node and node["allocated_to"] == rid, (rid, node_id, node)
        try:
            self.kazoo.retry(self.kazoo.delete, f"{REQUESTS}/{rid}")
        except NoNodeError:
            pass  # deleted before the connection was lost
        for node_id in request["nodes"]:
            self._set_node(node_id, state="in-use", user_data={"build": rid})
        for node_id, lock in zip(request["nodes"], locks):
            self._set_node(node_id, state="used", state_time=time.time())
            lock.release()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                while self.submitting and len(self.outstanding) < self.depth:
                    self.outstanding[self._submit()] = time.monotonic()
                for rid in list(self.outstanding):
                    request = self._get(f"{REQUESTS}/{rid}")
                    state = request and request["state"]
                    if state == "fulfilled":
                        self._use(rid, request)
                        self.handed[rid] = list(request["nodes"])
                    elif state == "failed" or request is None:
                        self.failed[rid] = request or {"state": "vanished"}
                    else:
                        continue
                    del self.outstanding[rid]
                    self.fulfilled_at.append(time.monotonic())
                self._stop.wait(0.02)
        except BaseException as exc:  # noqa: BLE001 - raised again on the test's thread
            self._error = exc

    def wait_done(self, count: int, timeout: float = 15.0) -> None:
        """Wait until `count` requests in all have ended (fulfilled and used, or failed)."""
        self._wait(lambda: self.done >= count, timeout, f"{count} requests done")

    def drain(self, timeout: float = 15.0) -> None:
        """Stop submitting; wait until every outstanding request has ended; stop the thread."""
        self.submitting = False
        self._wait(lambda: not self.outstanding, timeout, "every outstanding request done")
        self.stop()

    def _wait(self, reached: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not reached() and self._error is None:
            if time.monotonic() > deadline:
                raise RequestsNotServed(f"{what} not reached within {timeout:.0f}s ({self.done} done); "
                                        f"still outstanding: {self.describe()}")
            time.sleep(0.02)
        self.check()

    def describe(self) -> str:
        """Each outstanding request: its state in ZooKeeper, in the launcher's cache, its lock."""
        lines = []
        for rid, since in sorted(self.outstanding.items()):
            request = self._get(f"{REQUESTS}/{rid}")
            cached = self.launcher.ctx.cache.get_request(rid) if self.launcher else None
            lock = f"/nodepool/requests-lock/{rid}"
            holders = self.kazoo.retry(self.kazoo.get_children, lock) \
                if self.kazoo.retry(self.kazoo.exists, lock) else []
            lines.append(f"{rid} for {time.monotonic() - since:.1f}s: "
                         f"{request and (request['state'], request['nodes'])}, launcher cache: "
                         f"{cached and cached.state.value}, lock: {holders}")
        return "; ".join(lines)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.check()

    def check(self) -> None:
        if self._error is not None:
            raise self._error


def nodes_handed_once(handed: dict[str, list[str]]) -> list[str]:
    every = [node for nodes in handed.values() for node in nodes]
    assert len(every) == len(set(every)), f"a node handed to two requests: {handed}"
    return every


# After a failover, ZooKeeper answers lost with the connection used to drop requests: a
# request popped from the new-arrivals queue by a pass that ConnectionLoss ended, a lock
# contender created whose answer was lost (held by our session for ever), a fulfil write
# retried after its answer was lost ("illegal state change fulfilled -> fulfilled"). 7 runs
# in 39 left a request unserved before those were fixed; RequestsNotServed names it.
def test_leader_loss_under_load_fulfils_every_request_once(ens_env: EnsembleEnv, zk_ensemble: Any) -> None:
    ens_env.write_config(max_servers=10)
    launcher = ens_env.start_launcher("nl01")
    wait_for(lambda: "fake1" in launcher.workers, what="nl01 owns fake1")
    session = launcher.ctx.zk.kazoo.client_id
    stream = Stream(ens_env.kazoo, launcher).start()
    try:
        stream.wait_done(8)
        for _round in range(2):  # the leader, then the leader elected in its place
            old = zk_ensemble.leader()
            before, killed_at = stream.done, time.monotonic()
            zk_ensemble.kill(old)
            new = zk_ensemble.leader(timeout=10)
            elected_at = time.monotonic()
            stream.wait_done(before + 8)
            first_after = next(t for t in stream.fulfilled_at[before:] if t > killed_at)
            print(f"killed leader {old}: member {new} leads after {elected_at - killed_at:.2f}s; "
                  f"first request done {first_after - killed_at:.2f}s after the kill")
            zk_ensemble.start_member(old)         # back, while requests keep coming
            stream.wait_done(stream.done + 4)
        stream.drain()
    finally:
        stream.stop()
    assert stream.failed == {}
    handed = nodes_handed_once(stream.handed)
    assert len(handed) == len(stream.handed) >= 28
    assert launcher.thread.is_alive() and "fake1" in launcher.workers
    print(f"launcher session {'kept' if launcher.ctx.zk.kazoo.client_id == session else 'renewed'}; "
          f"{len(handed)} requests; cloud creates {ens_env.cloud.creates}")
    assert ens_env.requestor.wait(ens_env.requestor.submit(["small"]))["state"] == "fulfilled"


def lease(kazoo: KazooClient) -> tuple[str, int] | None:
    """The fake1 lease's owner ("host:pid") and the session that holds it, None while free."""
    try:
        data, stat = kazoo.retry(kazoo.get, LEASE)
    except NoNodeError:
        return None
    return json.loads(data)["owner"], stat.ephemeralOwner


def test_expired_session_of_the_provider_owner_hands_nothing_out_twice(
        ens_env: EnsembleEnv, zk_ensemble: Any) -> None:
    ens_env.write_config(min_ready=2, max_servers=10)
    ens_env.cloud.boot_delay = 1.0
    rq = ens_env.requestor
    nl01 = ens_env.start_launcher("nl01")
    wait_for(lambda: "fake1" in nl01.workers, what="nl01 owns fake1")
    nl02 = ens_env.start_launcher("nl02")
    # The spread's owner of fake1 runs it (nl01 hands it over when that is nl02).
    spread = assign(["fake1"], {nl01.owner_id: ProviderFilter(), nl02.owner_id: ProviderFilter()})
    first, second = (nl01, nl02) if spread["fake1"] == nl01.owner_id else (nl02, nl01)
    wait_for(lambda: "fake1" in first.workers and "fake1" not in second.workers
             and (lease(ens_env.kazoo) or ("",))[0] == first.owner_id,
             what=f"{first.hostname} owns fake1")
    passes_go_by(first, "fake1")

    def nodes(state: str, label: str) -> list[str]:
        found = []
        for node_id in ens_env.kazoo.get_children(NODES) if ens_env.kazoo.exists(NODES) else []:
            node = rq.node(node_id)
            if node and node["state"] == state and node["type"] == [label] and node["external_id"]:
                found.append(node_id)
        return found

    ready = wait_for(lambda: len(nodes("ready", "small")) >= 2 and nodes("ready", "small"),
                     timeout=15, what="two min-ready small nodes")
    in_flight = [rq.submit(["large"]) for _ in range(2)]
    wait_for(lambda: len(nodes("building", "large")) == 2, timeout=10,
             what="two large servers being built")
    owner, old_session = lease(ens_env.kazoo) or ("", 0)
    assert owner == first.owner_id and old_session == first.ctx.zk.kazoo.client_id[0]

    expire_session(ens_env.zk_tls, first.ctx.zk.kazoo)
    taken = wait_for(lambda: (held := lease(ens_env.kazoo)) and held[1] != old_session and held,
                     timeout=15, what="the fake1 lease taken by a new session")
    successor = first if taken[0] == first.owner_id else second
    wait_for(lambda: "fake1" in successor.workers, timeout=10,
             what=f"{successor.hostname} runs fake1")
    print(f"after {first.hostname}'s session expired, {successor.hostname} took the lease")

    handed: dict[str, list[str]] = {}
    for rid in in_flight:
        request = rq.wait(rid, timeout=20)
        assert request["state"] == "fulfilled", request
        handed[rid] = rq.accept(rid, request)
    after = [rq.submit(["small"]) for _ in range(3)]
    for rid in after:
        request = rq.wait(rid, timeout=20)
        assert request["state"] == "fulfilled", request
        handed[rid] = rq.accept(rid, request)
    every = nodes_handed_once(handed)
    assert set(ready) & set(every) <= {n for rid in after for n in handed[rid]}
    for rid in handed:
        rq.finish(handed[rid])
    # The owner by the spread, back with a new session, may have taken fake1 back meanwhile.
    runner = wait_for(lambda: next((la for la in (first, second) if "fake1" in la.workers), None),
                      what="a launcher runs fake1")
    passes_go_by(runner, "fake1")
    for node_id in every:  # nobody else got or holds a node a request was given
        node = rq.node(node_id)
        assert node is None or node["allocated_to"] in handed, node
    assert first.thread.is_alive() and second.thread.is_alive()
    assert isinstance(successor, Launcher)
