"""Node and NodeRequest records: serialisation rules and state tables of PROTOCOL.md."""

import json

import pytest

from nodepool.errors import InvalidTransition, ProtocolError
from nodepool.model import (
    NODE_TRANSITIONS,
    Node,
    NodeRequest,
    NodeState,
    RequestState,
    is_request_id,
)

NODE_KEYS = {
    "state", "state_time", "created_time", "type", "provider", "pool", "cloud", "region",
    "az", "host_id", "launcher", "allocated_to", "interface_ip", "public_ipv4",
    "private_ipv4", "public_ipv6", "private_ipv6", "connection_type", "connection_port",
    "ssh_port", "username", "python_path", "shell_type", "host_keys", "external_id",
    "hostname", "image_id", "slot", "attributes", "node_properties", "resources",
    "tenant_name", "requestor", "user_data", "hold_job", "comment", "hold_expiration",
    "driver_data",
}

# Zuul's required request keys (it raises on a request lacking any of them).
ZUUL_REQUIRED_REQUEST_KEYS = {
    "requestor_data", "requestor", "node_types", "provider", "state", "state_time", "event_id",
}


def test_node_written_by_us_carries_every_key():
    data = Node(type=["small"]).to_dict()
    assert NODE_KEYS <= set(data)
    assert data["python_path"] == "auto"
    assert data["connection_type"] == "ssh"
    assert data["ssh_port"] == data["connection_port"] == 22
    assert data["host_keys"] == []
    assert data["state"] == "init"


def test_node_unknown_keys_survive_a_round_trip():
    raw = Node(type=["small"], provider="p1").to_dict()
    raw.update({"id": "0000000001", "zuul_extra": {"a": [1, 2]}, "user_data": {"x": 1}})
    node = Node.from_json("0000000001", json.dumps(raw).encode())
    again = node.to_dict()
    assert again["zuul_extra"] == {"a": [1, 2]}
    assert again["id"] == "0000000001"
    assert again["user_data"] == {"x": 1}
    assert again == raw


def test_node_old_type_string_is_read_as_a_list():
    node = Node.from_dict("0000000007", {"state": "ready", "type": "ubuntu-jammy"})
    assert node.type == ["ubuntu-jammy"]
    assert node.to_dict()["type"] == ["ubuntu-jammy"]


def test_node_old_ssh_port_only_sets_connection_port():
    node = Node.from_dict("0000000007", {"state": "ready", "type": [], "ssh_port": 2222})
    assert node.connection_port == 2222
    assert node.to_dict()["ssh_port"] == 2222


def test_node_unknown_state_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="state"):
        Node.from_dict("0000000001", {"state": "exploded"})


def test_node_bad_json_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        Node.from_json("0000000001", b"{not json")
    with pytest.raises(ProtocolError, match="JSON object"):
        Node.from_json("0000000001", b"[1, 2]")


def test_node_set_state_stamps_time_and_refuses_illegal_edges():
    node = Node(id="0000000001")
    node.set_state(NodeState.BUILDING, now=100.0)
    assert (node.state, node.state_time) == (NodeState.BUILDING, 100.0)
    node.set_state(NodeState.READY, now=101.0)
    with pytest.raises(InvalidTransition, match="ready -> building"):
        node.set_state(NodeState.BUILDING)
    assert node.state == NodeState.READY and node.state_time == 101.0


def test_every_node_state_has_a_transition_row_and_deleted_is_terminal():
    assert set(NODE_TRANSITIONS) == set(NodeState)
    assert NODE_TRANSITIONS[NodeState.DELETED] == frozenset()
    for state in NodeState:
        if state is not NodeState.DELETED:
            assert NodeState.DELETING in NODE_TRANSITIONS[state], state


def test_request_written_the_zuul_way_parses():
    # What Zuul's NodeRequest.toDict() writes (Zuul 10-14).
    zuul = {
        "state": "requested", "state_time": 1700000000.5, "declined_by": [],
        "node_types": ["ubuntu-jammy", "ubuntu-jammy", "centos-9"], "nodes": [],
        "reuse": False, "requestor": "zuul01.example.org",
        "requestor_data": {"build_set_uuid": "abc", "tenant_name": "t", "pipeline_name": "check",
                           "job_uuid": "j1"},
        "provider": None, "relative_priority": 3, "event_id": "e-1",
        "created_time": 1700000000.1, "tenant_name": "openstack",
    }
    req = NodeRequest.from_json("200-0000000042", json.dumps(zuul).encode(), version=4)
    assert req.priority == 200 and req.sequence == 42 and req.version == 4
    assert req.sort_key == (200, 3, 42)
    assert req.node_types == ["ubuntu-jammy", "ubuntu-jammy", "centos-9"]
    assert req.reuse is False and req.requestor_data["job_uuid"] == "j1"
    assert req.to_dict() == zuul


def test_request_missing_reuse_means_true_and_we_write_zuuls_required_keys():
    req = NodeRequest.from_dict("100-0000000001", {"state": "requested", "node_types": ["a"]})
    assert req.reuse is True
    out = req.to_dict()
    assert ZUUL_REQUIRED_REQUEST_KEYS <= set(out)
    assert out["requestor_data"] is None and out["event_id"] is None and out["provider"] is None


def test_request_state_table():
    req = NodeRequest(id="100-0000000001")
    req.set_state(RequestState.PENDING, now=5.0)
    req.set_state(RequestState.REQUESTED, now=6.0)  # reset of a lost request
    req.set_state(RequestState.PENDING, now=7.0)
    req.set_state(RequestState.FULFILLED, now=8.0)
    with pytest.raises(InvalidTransition):
        req.set_state(RequestState.PENDING)
    assert req.state_time == 8.0


def test_service_order_is_priority_then_relative_priority_then_sequence():
    ids = [("200-0000000001", 0), ("100-0000000009", 5), ("100-0000000010", 0),
           ("100-0000000002", 5), ("300-0000000000", -1)]
    reqs = [NodeRequest(id=i, relative_priority=rp) for i, rp in ids]
    ordered = [r.id for r in sorted(reqs, key=lambda r: r.sort_key)]
    assert ordered == ["100-0000000010", "100-0000000002", "100-0000000009",
                       "200-0000000001", "300-0000000000"]


@pytest.mark.parametrize("name,ok", [("200-0000000001", True), ("900-0000000123", True),
                                     ("0000000001", False), ("lock", False), ("20-00000001", False)])
def test_request_id_recognised_by_dash_at_index_3(name, ok):
    assert is_request_id(name) is ok


def test_node_properties_default_to_an_empty_mapping_and_null_reads_as_one() -> None:
    """Zuul's default is {}: `'spot' in node_properties` must work on our nodes."""
    assert json.loads(Node().to_json())["node_properties"] == {}
    assert Node.from_json("0000000001", b'{"node_properties": null}').node_properties == {}


def test_nodepools_aws_external_id_dict_reads_as_the_instance_with_the_host_in_driver_data():
    """Nodepool 11's AWS driver writes {"instance": ..., "host": ...}; listings, leak cleanup
    and the vanished-instance check compare the instance id (a dict is not hashable)."""
    raw = {"state": "in-use", "type": ["small"], "provider": "ec2",
           "external_id": {"instance": "i-0123", "host": "h-0456"}}
    node = Node.from_json("0000000001", json.dumps(raw).encode())
    assert node.external_id == "i-0123" and node.driver_data == {"host": "h-0456"}
    assert Node.from_json("2", json.dumps({**raw, "external_id": {}}).encode()).external_id is None
    kept = {**raw, "driver_data": {"state": "wait-running", "host": "h-ours"}}
    assert Node.from_json("3", json.dumps(kept).encode()).driver_data["host"] == "h-ours"
