"""Cloud faults during launch and delete, and leak cleanup, on the in-memory fake cloud."""

from requestor import wait_for

from nodepool.testing.fake_adapter import TAG_NODE, TAG_POOL, TAG_PROVIDER


def live_servers(cloud):
    return [s for s in cloud.servers.values() if s.status != "DELETED"]


def test_quota_error_aborts_the_node_and_the_request_is_still_served(env):
    env.write_config()
    env.cloud.fail_next_create("quota")
    env.start_launcher()
    rq = env.requestor
    req = rq.wait(rq.submit(["small"]))
    assert req["state"] == "fulfilled" and req["declined_by"] == []
    assert env.cloud.calls["create_server"] >= 2   # the refused create, then the real one
    assert len(live_servers(env.cloud)) == 1


def test_error_server_is_deleted_and_relaunched(env):
    env.write_config(retries=3)
    env.cloud.fail_next_create("error")
    env.start_launcher()
    rq = env.requestor
    req = rq.wait(rq.submit(["small"]))
    assert req["state"] == "fulfilled"
    node = rq.node(req["nodes"][0])
    # The ERROR server of attempt 1 is gone; only the ready node's server remains.
    wait_for(lambda: [s.id for s in live_servers(env.cloud)] == [node["external_id"]],
             what="failed server deleted")
    assert env.cloud.creates == 2


def test_launch_failing_every_retry_fails_the_request_and_cleans_up(env):
    env.write_config(retries=2)
    env.cloud.fail_next_create("error", count=2)
    env.start_launcher()
    rq = env.requestor
    req = rq.wait(rq.submit(["small"]))
    assert req["state"] == "failed" and len(req["declined_by"]) == 1
    wait_for(lambda: not live_servers(env.cloud), what="every failed server deleted")
    wait_for(lambda: not env.kazoo.get_children("/nodepool/nodes"), what="failed node removed")
    assert env.cloud.creates == 2


def test_transient_errors_are_retried_with_backoff(env):
    env.write_config()
    env.cloud.fail_next_create("transient", count=2, retry_after=0.05)
    env.start_launcher()
    req = env.requestor.wait(env.requestor.submit(["small"]))
    assert req["state"] == "fulfilled"
    assert env.cloud.calls["create_server"] == 3 and len(live_servers(env.cloud)) == 1


def test_server_stuck_building_times_out_and_is_replaced(env):
    env.write_config(launch_timeout=1)
    env.cloud.fail_next_create("hang")
    env.start_launcher()
    req = env.requestor.wait(env.requestor.submit(["small"]), timeout=20)
    assert req["state"] == "fulfilled"
    wait_for(lambda: len(live_servers(env.cloud)) == 1, what="stuck server deleted")
    assert env.cloud.creates == 2


def test_failed_attempts_server_whose_delete_hangs_is_deleted_again(env):
    """The launch's own cleanup re-issues a delete the cloud accepted and never did."""
    env.write_config(launch_timeout=1, retries=3)
    env.cloud.fail_next_create("error")
    env.cloud.fail_next_delete("hang")
    env.start_launcher()
    rq = env.requestor
    req = rq.wait(rq.submit(["small"]), timeout=20)
    assert req["state"] == "fulfilled"
    node = rq.node(req["nodes"][0])
    wait_for(lambda: [s.id for s in live_servers(env.cloud)] == [node["external_id"]],
             timeout=15, what="the failed attempt's server deleted")
    assert env.cloud.calls["delete_server"] >= 2 and env.cloud.creates == 2


def test_hanging_delete_is_retried_without_losing_the_node_record(env):
    env.write_config(launch_timeout=1)
    env.start_launcher()
    rq = env.requestor
    rid = rq.submit(["small"])
    nodes = rq.accept(rid, rq.wait(rid))
    server = rq.node(nodes[0])["external_id"]
    env.cloud.fail_next_delete("hang")
    rq.finish(nodes)
    wait_for(lambda: env.cloud.calls["delete_server"] >= 1, what="first delete issued")
    # While the server exists the record stays (deleting), however long the cloud hangs.
    assert rq.node(nodes[0])["state"] == "deleting"
    assert server in {s.id for s in live_servers(env.cloud)}
    wait_for(lambda: rq.node(nodes[0]) is None, timeout=15, what="delete retried and done")
    assert env.cloud.calls["delete_server"] >= 2
    assert server not in {s.id for s in live_servers(env.cloud)}


def test_leaked_server_is_deleted_after_two_passes_untagged_never(env):
    env.write_config()
    launcher = env.start_launcher()
    leaked = env.cloud.add_server({TAG_PROVIDER: "fake1", TAG_POOL: "main",
                                   TAG_NODE: "0000999999"})
    untagged = env.cloud.add_server({})
    other = env.cloud.add_server({TAG_PROVIDER: "someone-else", TAG_NODE: "0000999998"})
    worker = wait_for(lambda: launcher.workers.get("fake1"), what="provider started")
    worker.request_leak_scan()
    wait_for(lambda: worker.leaks.suspects, what="first pass saw the leak")
    assert leaked in {s.id for s in live_servers(env.cloud)}   # one pass is not enough
    worker.request_leak_scan()
    wait_for(lambda: leaked not in {s.id for s in live_servers(env.cloud)},
             what="leak deleted on the second pass")
    ids = {s.id for s in live_servers(env.cloud)}
    assert untagged in ids and other in ids


def test_deletions_while_a_pool_waits_at_max_servers_do_not_reread_cloud_limits(env):
    # Our own usage is counted from our nodes: freeing one of them needs no call
    # to the cloud's limits (each would be an API call per deletion).
    env.write_config(max_servers=1)
    env.start_launcher()
    rq = env.requestor
    first = rq.submit(["small"])
    in_use = rq.accept(first, rq.wait(first))
    second = rq.submit(["small"])                  # waits: pool main is at max-servers
    wait_for(lambda: env.cloud.calls["get_limits"] >= 1, what="limits read at start")
    before = env.cloud.calls["get_limits"]
    rq.finish(in_use)                              # deleted; frees the pool's one slot
    served = rq.wait(second)
    assert served["state"] == "fulfilled"
    assert env.cloud.calls["get_limits"] == before
    rq.finish(rq.accept(second, served))

