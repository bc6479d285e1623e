"""When a launch writes its node: when its machine waits, not after every driver step."""

import json

from requestor import wait_for


def launch_one(env) -> str:
    """Start a launcher and submit one request for `small`; its id."""
    env.write_config()
    env.start_launcher()
    return env.requestor.submit(["small"])


def building_node(env):
    for nid in env.kazoo.get_children("/nodepool/nodes"):
        node = env.requestor.node(nid)
        if node and node["state"] == "building":
            return node
    return None


def test_a_launch_that_never_waits_writes_its_node_only_when_ready(env):
    rq = env.requestor
    rid = launch_one(env)
    req = rq.wait(rid)
    (node_id,) = req["nodes"]
    data, stat = env.kazoo.get(f"/nodepool/nodes/{node_id}")
    node = json.loads(data)
    # Created `init`, then written once: `ready`, with what the four driver steps
    # (start, submit, wait-active, attach-ip) learnt. No step waited, so none saved.
    assert stat.version == 1
    assert node["state"] == "ready"
    assert node["driver_data"] == {"state": "complete", "external_id": node["external_id"]}
    assert env.cloud.servers[node["external_id"]].public_ipv4 == node["interface_ip"]


def test_a_launch_saves_its_machine_before_it_waits_for_the_server(env):
    env.cloud.boot_delay = 1.0
    rq = env.requestor
    rid = launch_one(env)

    node = wait_for(lambda: building_node(env), timeout=5, what="a building node")
    # Saved where it waits: a takeover resumes the server, it does not make another.
    assert node["driver_data"] == {"state": "wait-active", "external_id": node["external_id"]}
    assert list(env.cloud.servers) == [node["external_id"]]
    assert rq.wait(rid)["state"] == "fulfilled"


def test_an_init_node_left_with_a_server_but_no_saved_state_is_deleted_with_it(env):
    """A launcher that died between its create call and its first wait left this."""
    node_id = "0000000042"
    record = {"state": "init", "provider": "fake1", "pool": "main", "type": ["small"],
              "launcher": "dead-launcher", "state_time": 1.0, "created_time": 1.0}
    env.kazoo.create(f"/nodepool/nodes/{node_id}", json.dumps(record).encode(), makepath=True)
    server_id = env.cloud.add_server({"nodepool_provider_name": "fake1",
                                      "nodepool_pool_name": "main",
                                      "nodepool_node_id": node_id})
    env.write_config()
    env.start_launcher()
    wait_for(lambda: not env.kazoo.exists(f"/nodepool/nodes/{node_id}"), timeout=10,
             what="the node record removed")
    assert server_id not in env.cloud.servers


def test_a_launch_saves_its_machine_before_it_backs_off_after_a_transient_error(env):
    env.cloud.fail_next_create("transient", retry_after=1.0)
    rq = env.requestor
    rid = launch_one(env)
    node = wait_for(lambda: building_node(env), timeout=5, what="a building node")
    # The run went start -> submit, then the create call failed: saved at `submit`,
    # a takeover would look for a server before creating one.
    assert node["driver_data"] == {"state": "submit", "external_id": None}
    assert rq.wait(rid)["state"] == "fulfilled"
    assert env.cloud.creates == 2 and len(env.cloud.servers) == 1
