"""min-ready on a real ZooKeeper: spare launches without requests, once each, within quota."""

import time

from plugins.launcher_env import passes_go_by
from requestor import wait_for

from nodepool.launcher.ownership import MIN_READY_LEASE
from nodepool.launcher.spread import ProviderFilter

REQUESTS = "/nodepool/requests"
NODES = "/nodepool/nodes"


def nodes(env):
    ids = env.kazoo.get_children(NODES) if env.kazoo.exists(NODES) else []
    return [n for n in (env.requestor.node(i) for i in ids) if n]


def ready_spares(env):
    return [n for n in nodes(env) if n["state"] == "ready" and n["allocated_to"] is None]


class ChildHistory:
    """Every child name ever seen under a path, and the most at one time (a child watch)."""

    def __init__(self, kazoo, path):
        kazoo.ensure_path(path)
        self.seen: set[str] = set()
        self.most = 0

        def record(children):
            self.seen |= set(children)
            self.most = max(self.most, len(children))
        kazoo.ChildrenWatch(path, record)


def churn_min_ready(launcher, seconds):
    """Make the launcher run min-ready over and over (a pass per wake, 0.1 s apart at most).

    Then two more passes of each provider worker, so what the last min-ready pass wanted
    has been acted on before the test asserts that nothing more was launched.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        launcher.wake()
        time.sleep(0.02)
    for provider in list(launcher.workers):
        passes_go_by(launcher, provider)


def test_min_ready_launches_spares_without_any_node_request(env):
    env.write_config(min_ready=3)
    requests = ChildHistory(env.kazoo, REQUESTS)
    children_changes = env.kazoo.exists(REQUESTS).cversion
    env.start_launcher()
    wait_for(lambda: len(ready_spares(env)) == 3, what="three min-ready spares")
    assert requests.seen == set()
    # Not even a request made and deleted between two watch events.
    assert env.kazoo.exists(REQUESTS).cversion == children_changes
    assert all(n["requestor"] is None and n["pool"] == "main" for n in nodes(env))


def test_repeated_min_ready_passes_never_launch_a_spare_twice(env):
    env.write_config(min_ready=2)
    env.cloud.boot_delay = 0.5      # launches stay under way while passes run
    history = ChildHistory(env.kazoo, NODES)
    launcher = env.start_launcher()
    churn_min_ready(launcher, 1.5)
    wait_for(lambda: len(ready_spares(env)) == 2, what="two min-ready spares")
    churn_min_ready(launcher, 0.5)
    assert env.cloud.creates == 2 and history.most == 2
    # A request takes a spare; min-ready replaces exactly that one.
    rq = env.requestor
    req = rq.wait(rq.submit(["small"]))
    assert req["state"] == "fulfilled"
    wait_for(lambda: len(ready_spares(env)) == 2, what="min-ready refilled")
    churn_min_ready(launcher, 0.5)
    assert env.cloud.creates == 3 and len(nodes(env)) == 3


def test_min_ready_spares_stay_within_max_servers(env):
    env.write_config(min_ready=4, max_servers=2)
    requests = ChildHistory(env.kazoo, REQUESTS)
    launcher = env.start_launcher()
    wait_for(lambda: len(ready_spares(env)) == 2, what="two spares (max-servers)")
    churn_min_ready(launcher, 1.0)
    assert env.cloud.creates == 2 and len(nodes(env)) == 2
    assert requests.seen == set()
    # Quota frees when a spare is used and deleted: min-ready takes it again.
    rq = env.requestor
    rid = rq.submit(["small"])
    req = rq.wait(rid)
    used = req["nodes"][0]
    rq.finish(rq.accept(rid, req))
    wait_for(lambda: rq.node(used) is None, what="used node deleted")
    wait_for(lambda: len(ready_spares(env)) == 2, what="spare launched into freed quota")
    assert env.cloud.creates == 3


def test_failing_spare_launch_backs_the_label_off(env):
    env.write_config(min_ready=1, retries=1)
    env.cloud.fail_next_create("error")
    launcher = env.start_launcher()
    wait_for(lambda: "small" in launcher.min_ready.failed_until, what="min-ready backed off")
    wait_for(lambda: nodes(env) == [], what="failed node deleted")
    churn_min_ready(launcher, 0.5)
    assert env.cloud.creates == 1 and nodes(env) == []


def test_label_served_only_by_another_launcher_is_requested(env):
    env.write_config(min_ready=0)
    # nl02 first, and it may own no provider: it holds min-ready, nl01 the provider.
    other = env.start_launcher("nl02", serves=ProviderFilter(exclude=("*",)))
    wait_for(lambda: other.min_ready_owner, what="nl02 holds min-ready")
    owner = env.start_launcher("nl01")
    wait_for(lambda: "fake1" in owner.workers, what="nl01 runs fake1")
    assert other.workers == {}
    requests = ChildHistory(env.kazoo, REQUESTS)
    env.write_config(min_ready=2)            # both reload; no provider changes
    wait_for(lambda: len(ready_spares(env)) == 2, timeout=15, what="two spares via requests")
    assert requests.seen and all(r.startswith("900-") for r in requests.seen)
    # Fulfilled min-ready requests are deleted; their nodes were released as spares.
    wait_for(lambda: env.kazoo.get_children(REQUESTS) == [], what="min-ready requests deleted")
    assert owner.min_ready_owner is False and MIN_READY_LEASE not in owner.leases.held
