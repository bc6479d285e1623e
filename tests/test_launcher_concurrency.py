"""max-concurrency as Nodepool means it: requests handled at once; 0: the provider handles none."""

from plugins.launcher_env import passes_go_by
from requestor import wait_for

from nodepool.explain import current_reasons
from nodepool.testing.fake_cloud import FakeClock, FakeCloud


def with_max_concurrency(env, value: int, **kw) -> None:
    path = env.write_config(**kw)
    text = open(path).read().replace("    rate: 0\n", f"    rate: 0\n    max-concurrency: {value}\n")
    with open(path, "w") as f:
        f.write(text)


def test_max_concurrency_counts_requests_handled_not_nodes_launched(env):
    """Two requests of two nodes each are handled at once (four launches), the third waits
    for one of them to be done (issue 16: it counted launches, so one request at a time)."""
    clock = FakeClock()
    env.cloud = FakeCloud(boot_delay=60.0, clock=clock)   # servers boot when the test says
    with_max_concurrency(env, 2)
    launcher = env.start_launcher()
    rq = env.requestor
    rids = [rq.submit(["small", "small"]) for _ in range(3)]
    wait_for(lambda: env.cloud.creates == 4, what="two requests' four launches")
    wait_for(lambda: [rq.get(r)["state"] for r in rids] == ["pending", "pending", "requested"],
             what="two requests handled, the third waiting")
    passes_go_by(launcher, "fake1")
    assert env.cloud.creates == 4     # the third request waits for a handler, not for quota
    wait_for(lambda: "handling 2 requests already, its max-concurrency"
             in current_reasons(env.kazoo, [rids[2]]).get(rids[2], ""),
             what="the third request's reason names max-concurrency")
    env.cloud.boot_delay = 0.0        # the third request's servers boot at once
    clock.advance(120.0)
    for rid in rids:
        assert rq.wait(rid)["state"] == "fulfilled"
    assert env.cloud.creates == 6


def test_max_concurrency_zero_handles_no_request_at_all(env):
    """As Nodepool: the provider neither serves nor declines requests, nor launches spares."""
    with_max_concurrency(env, 0, min_ready=1)
    launcher = env.start_launcher()
    rq = env.requestor
    served, unknown = rq.submit(["small"]), rq.submit(["no-such-label"])
    passes_go_by(launcher, "fake1", count=3)
    assert [rq.get(served)["state"], rq.get(unknown)["state"]] == ["requested", "requested"]
    assert rq.get(unknown)["declined_by"] == [] and env.cloud.creates == 0


def test_max_concurrency_defaults_to_no_limit(env):
    """Nodepool's default is -1 (no limit); 0 would handle nothing."""
    env.write_config()
    env.start_launcher()
    rq = env.requestor
    rids = [rq.submit(["small"]) for _ in range(3)]
    assert [rq.wait(r)["state"] for r in rids] == ["fulfilled"] * 3


def test_a_pool_at_quota_logs_once_that_it_pauses_and_once_that_it_resumes(env, caplog):
    """Issue 16: a pool paused at quota logged nothing. Once each way, with why."""
    import logging
    caplog.set_level(logging.INFO, logger="nodepool.launcher.requests")
    env.write_config(max_servers=1)
    launcher = env.start_launcher()
    rq = env.requestor
    first = rq.submit(["small"])
    nodes = rq.accept(first, rq.wait(first))
    second = rq.submit(["small"])

    def said(text):
        return [r for r in caplog.records if r.name == "nodepool.launcher.requests"
                and text in r.getMessage() and r.levelno == logging.INFO]
    wait_for(lambda: said("Pool main of provider fake1 paused"), what="pause logged")
    passes_go_by(launcher, "fake1", count=5)
    (paused,) = said("Pool main of provider fake1 paused")
    assert "max-servers" in paused.getMessage() and second in paused.getMessage()
    rq.finish(nodes)
    assert rq.wait(second)["state"] == "fulfilled"
    wait_for(lambda: said("Pool main of provider fake1 resumed"), what="resume logged")
    passes_go_by(launcher, "fake1", count=3)
    assert len(said("resumed")) == 1 and len(said("paused")) == 1
