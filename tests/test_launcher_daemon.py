"""The daemon: components, provider ownership and takeover, restarts, reloads, lost sessions."""

import collections
import json
import logging
import time

from requestor import wait_for
from zkhelpers import expire_session

from nodepool.launcher.ownership import Leases
from nodepool.launcher.spread import ProviderFilter, assign


def components(kazoo, kind):
    path = f"/nodepool/components/{kind}"
    if not kazoo.exists(path):
        return []
    return [json.loads(kazoo.get(f"{path}/{c}")[0]) for c in kazoo.get_children(path)]


def lease_owner(kazoo, provider):
    data, _ = kazoo.get(f"/nodepool/launcher/provider-lease/{provider}")
    return json.loads(data)["owner"]


def test_launcher_registers_launcher_and_pool_components(env):
    env.write_config()
    env.start_launcher()
    wait_for(lambda: components(env.kazoo, "pool"), what="pool component")
    (launcher,) = components(env.kazoo, "launcher")
    (pool,) = components(env.kazoo, "pool")
    assert launcher["kind"] == "launcher" and launcher["hostname"] == "nl01"
    assert pool["provider_name"] == "fake1" and pool["name"] == "main"
    assert pool["supported_labels"] == ["large", "small"] and pool["paused"] is False
    assert pool["id"].startswith("nl01-PoolWorker.fake1-main-")


def test_components_are_named_by_the_host_name_as_nodepool_names_them(env, zk):
    """socket.gethostname(), as Nodepool: getfqdn() is often just "localhost"."""
    import socket

    from nodepool.launcher.daemon import Launcher
    from nodepool.zk.components import ComponentRegistry
    env.write_config()
    assert Launcher(env.config_path).hostname == socket.gethostname()
    registry = ComponentRegistry(zk)
    try:
        assert registry.hostname == socket.gethostname()
    finally:
        registry.close()


def test_one_owner_per_provider_and_takeover_when_it_stops(env):
    env.write_config()
    first = env.start_launcher("nl01")
    wait_for(lambda: "fake1" in first.workers, what="nl01 owns fake1")
    second = env.start_launcher("nl02")
    # The spread's owner of fake1 holds it (nl01 hands it over if nl02 is the owner).
    owners = assign(["fake1"], {first.owner_id: ProviderFilter(), second.owner_id: ProviderFilter()})
    owner, other = (first, second) if owners["fake1"] == first.owner_id else (second, first)
    wait_for(lambda: "fake1" in owner.workers and lease_owner(env.kazoo, "fake1") == owner.owner_id
             and "fake1" not in other.workers, what=f"{owner.hostname} owns fake1")
    assert "fake1" not in other.leases.held
    wait_for(lambda: len(components(env.kazoo, "pool")) == 1, what="one pool component")
    assert env.requestor.wait(env.requestor.submit(["small"]))["state"] == "fulfilled"
    owner.stop()
    wait_for(lambda: "fake1" in other.workers, what=f"{other.hostname} took fake1 over")
    assert lease_owner(env.kazoo, "fake1") == other.owner_id
    assert env.requestor.wait(env.requestor.submit(["small"]))["state"] == "fulfilled"


def test_restart_mid_launch_resumes_the_same_server(env):
    env.write_config()
    env.cloud.boot_delay = 1.0
    first = env.start_launcher("nl01")
    rq = env.requestor
    rid = rq.submit(["small"])
    wait_for(lambda: any((rq.node(n) or {}).get("external_id")
                         for n in env.kazoo.get_children("/nodepool/nodes")),
             what="server created")
    first.stop()                         # SIGTERM path: hand back, keep the launch resumable
    req = rq.get(rid)
    assert req["state"] == "requested"   # the pending request went back
    env.start_launcher("nl02")
    req = rq.wait(rid)
    assert req["state"] == "fulfilled"
    assert env.cloud.creates == 1        # resumed, not relaunched
    assert rq.node(req["nodes"][0])["external_id"] in env.cloud.servers


def test_lost_pending_request_is_reset_and_served(env):
    env.write_config()
    launcher = env.start_launcher()
    wait_for(lambda: "fake1" in launcher.workers, what="provider up")
    rq = env.requestor
    # A request some dead launcher left pending (no lock held by anyone).
    rid = rq.submit(["small"])
    rq.wait(rid)
    body = rq.get(rid)
    env.kazoo.delete(f"/nodepool/requests/{rid}")
    body.update(state="pending", nodes=[])
    path = env.kazoo.create("/nodepool/requests/200-", json.dumps(body).encode(), sequence=True)
    lost = path.rsplit("/", 1)[1]
    launcher.reset_lost_requests()       # the 5-second maintenance job, called now
    assert rq.wait(lost)["state"] == "fulfilled"


def test_lost_pending_request_with_an_allocated_ready_node_is_reset_and_served(env):
    """A launcher died while serving: its pending request has a ready node allocated.
    The reset gives the node back to the pool, then the request is served again."""
    env.write_config(min_ready=1)
    first = env.start_launcher("nl01")
    rq = env.requestor

    def ready_nodes() -> list[str]:
        return [n for n in env.kazoo.get_children("/nodepool/nodes")
                if (rq.node(n) or {}).get("state") == "ready"]
    [spare] = wait_for(ready_nodes, what="a ready spare")
    first.stop()
    env.launchers.remove(first)
    body = {"state": "pending", "node_types": ["small"], "requestor": "zuul-test",
            "nodes": [], "declined_by": [], "reuse": True, "state_time": time.time()}
    lost = env.kazoo.create("/nodepool/requests/200-", json.dumps(body).encode(),
                            sequence=True).rsplit("/", 1)[1]
    rq.set_node(spare, allocated_to=lost)
    env.write_config(min_ready=0)
    launcher = env.start_launcher("nl02")
    wait_for(lambda: "fake1" in launcher.workers, what="provider up")
    launcher.reset_lost_requests()
    req = rq.wait(lost)
    assert req["state"] == "fulfilled"
    assert [rq.node(n)["allocated_to"] for n in req["nodes"]] == [lost]


def test_invalid_config_keeps_the_last_good_one_and_a_valid_change_restarts_only_it(env):
    env.write_config(max_servers=10)
    launcher = env.start_launcher()
    worker = wait_for(lambda: launcher.workers.get("fake1"), what="provider up")
    with open(env.config_path, "a") as f:
        f.write("\nbogus-key: 1\n")
    launcher.check_config()
    assert launcher.workers.get("fake1") is worker          # still the same, still serving
    assert env.requestor.wait(env.requestor.submit(["small"]))["state"] == "fulfilled"
    env.write_config(max_servers=5)
    launcher.check_config()
    new = wait_for(lambda: launcher.workers.get("fake1") not in (None, worker),
                   what="provider restarted") and launcher.workers["fake1"]
    assert new.pools["main"].cfg.max_servers == 5
    assert env.requestor.wait(env.requestor.submit(["small"]))["state"] == "fulfilled"


def test_unchanged_provider_is_not_restarted_on_reload(env):
    env.write_config()
    launcher = env.start_launcher()
    worker = wait_for(lambda: launcher.workers.get("fake1"), what="provider up")
    env.write_config(min_ready=1)      # labels changed, provider did not
    launcher.check_config()
    assert launcher.workers.get("fake1") is worker
    assert launcher.ctx.config.labels["small"].min_ready == 1


def test_lost_session_re_registers_and_keeps_serving(env):
    env.write_config()
    launcher = env.start_launcher()
    wait_for(lambda: "fake1" in launcher.workers, what="provider up")
    expire_session(env.zk_tls, launcher.ctx.zk.kazoo)
    wait_for(lambda: components(env.kazoo, "launcher") and components(env.kazoo, "pool"),
             timeout=20, what="components back")
    wait_for(lambda: "fake1" in launcher.workers, timeout=20, what="lease won again")
    assert env.requestor.wait(env.requestor.submit(["small"]), timeout=20)["state"] == \
        "fulfilled"


def test_a_standby_launcher_says_once_that_it_stands_by_and_once_that_it_stops(
        env, monkeypatch, caplog):
    """Issue 16: a standby launcher logged nothing; it must not log on every retry either.
    (Provider leases are spread over the launchers; min-ready's still goes to the first.)"""
    caplog.set_level(logging.INFO, logger="nodepool.launcher.ownership")
    polls: collections.Counter = collections.Counter()
    poll = Leases.poll

    def retrying_poll(self):
        self._retry.set()     # every poll tries for the lease again, as after many watch events
        poll(self)
        if self.zk.connected:
            polls[self.owner.split(":")[0]] += 1
    monkeypatch.setattr(Leases, "poll", retrying_poll)
    env.write_config()
    first = env.start_launcher("nl01")
    wait_for(lambda: "fake1" in first.workers, what="nl01 owns fake1")
    second = env.start_launcher("nl02")

    def said(text):
        return [r for r in caplog.records if r.name == "nodepool.launcher.ownership"
                and text in r.getMessage()]
    wait_for(lambda: said("Standing by for _min-ready: launcher nl01"), what="nl02 stands by")
    start = polls["nl02"]
    wait_for(lambda: (second.wake(), polls["nl02"] >= start + 5)[1], what="five more polls")
    assert len(said("Standing by for _min-ready")) == 1
    assert all(r.levelno == logging.INFO for r in said("Standing by"))
    first.stop()
    wait_for(lambda: second.min_ready_owner, what="nl02 took min-ready over")
    assert len(said("No longer standing by for _min-ready: its lease is ours now")) == 1
