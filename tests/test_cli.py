"""The `nodepool` CLI against a real ZooKeeper: output, JSON, and exit codes."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from kazoo.recipe.lock import Lock
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool import cli
from nodepool.cli.output import format_age
from nodepool.model import Node, NodeRequest, NodeState, RequestState
from nodepool.zk import locks, nodes, paths, requests


def write_config(tmp_path, zk_tls, port=None, extra=""):
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(nodepool_yaml(zk_tls, ZK_HEADER, port=port) + f"""
labels:
  - name: small
  - name: large
providers:
  - name: cloud1
    cloud: local
    pools:
      - name: main
        max-servers: 5
        labels:
          - name: small
            cloud-image: img
            flavor-name: m1.small
    cloud-images:
      - name: img
{extra}""")
    return str(cfg)


@pytest.fixture
def cfg(tmp_path, zk_tls):
    return write_config(tmp_path, zk_tls)


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ready_node(kazoo, **kw) -> Node:
    node = Node(type=["small"], provider="cloud1", pool="main", external_id="srv-1",
                public_ipv4="203.0.113.9", interface_ip="203.0.113.9", **kw)
    node.set_state(NodeState.BUILDING)
    node.set_state(NodeState.READY)
    return nodes.create_node(kazoo, node)


def test_format_age_is_dd_hh_mm_ss():
    assert format_age(0) == "00:00:00:00"
    assert format_age(90061) == "01:01:01:01"
    assert format_age(-5) == "00:00:00:00"


def test_list_shows_columns_and_lock_state(capsys, cfg, zk_client):
    a = ready_node(zk_client)
    b = ready_node(zk_client)
    lock = Lock(zk_client, paths.node_lock(b.id))
    lock.acquire()
    code, out, _ = run_cli(capsys, "-c", cfg, "list")
    assert code == 0
    for column in ("ID", "Provider", "Label", "Server ID", "Public IPv4", "IPv6", "State",
                   "Age", "Locked"):
        assert column in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if "srv-1" in line}
    assert "unlocked" in rows[a.id] and "| locked" in rows[b.id]
    code, out, _ = run_cli(capsys, "-c", cfg, "list", "--detail")
    assert "Allocated To" in out and "Hold Job" in out and "main" in out
    code, out, _ = run_cli(capsys, "-c", cfg, "list", "--json")
    data = {n["id"]: n for n in json.loads(out)}
    assert data[a.id]["locked"] is False and data[b.id]["locked"] is True
    assert data[a.id]["state"] == "ready" and data[a.id]["type"] == ["small"]
    lock.release()


def test_delete_sets_deleting_under_the_lock(capsys, cfg, zk_client):
    node = ready_node(zk_client)
    code, out, _ = run_cli(capsys, "-c", cfg, "delete", node.id)
    assert code == 0 and "marked for deletion" in out
    assert nodes.get_node(zk_client, node.id).state == NodeState.DELETING
    assert locks.node_lock_contenders(zk_client, node.id) == []


def test_delete_of_a_node_someone_holds_says_so(capsys, cfg, zk_client):
    node = ready_node(zk_client)
    lock = Lock(zk_client, paths.node_lock(node.id))
    lock.acquire()
    code, _, err = run_cli(capsys, "-c", cfg, "delete", node.id)
    assert code == cli.EXIT_FAILED
    assert f"node {node.id} is locked by someone else" in err
    assert nodes.get_node(zk_client, node.id).state == NodeState.READY
    lock.release()


def test_unknown_node_id_fails_clearly(capsys, cfg, zk_client):
    code, _, err = run_cli(capsys, "-c", cfg, "hold", "0000099999")
    assert code == cli.EXIT_FAILED and "node 0000099999 not found" in err
    assert zk_client.exists(paths.node("0000099999")) is None


@pytest.mark.parametrize("bad", ["..", "", "../requests", "12a"])
def test_an_id_that_is_not_a_node_id_is_a_usage_error(capsys, cfg, zk_client, bad):
    for command in ("delete", "hold"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["-c", cfg, command, bad])
        err = capsys.readouterr().err
        assert exit_.value.code == cli.EXIT_USAGE and "is not a node id" in err, err
        assert "Traceback" not in err


def test_hold_with_reason(capsys, cfg, zk_client):
    node = ready_node(zk_client)
    code, out, _ = run_cli(capsys, "-c", cfg, "hold", node.id, "--reason", "debug boot")
    assert code == 0
    held = nodes.get_node(zk_client, node.id)
    assert held.state == NodeState.HOLD and held.comment == "debug boot"
    # Held twice is an illegal edge: a clear error, nothing changed.
    code, _, err = run_cli(capsys, "-c", cfg, "hold", node.id)
    assert code == cli.EXIT_FAILED and f"node {node.id} is already held" in err
    code, _, err = run_cli(capsys, "-c", cfg, "delete", node.id)
    assert code == 0
    code, _, err = run_cli(capsys, "-c", cfg, "hold", node.id)
    assert code == cli.EXIT_FAILED and f"node {node.id} is deleting; cannot hold it" in err


def test_version_of_both_commands():
    from nodepool import __version__
    for module in ("nodepool.cli", "nodepool.launcher.main"):
        proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip().endswith(__version__), proc


def test_a_closed_pipe_ends_the_command_quietly(cfg, zk_client):
    """`nodepool list | head -1`: the reader went away; no traceback, exit 141 as GNU tools."""
    for _ in range(3):
        ready_node(zk_client)
    proc = subprocess.Popen([sys.executable, "-m", "nodepool.cli", "-c", cfg, "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    proc.stdout.close()   # before it writes: its first write meets a closed pipe
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_PIPE, err
    assert err == b""


def test_request_list_in_service_order(capsys, cfg, zk_client):
    low = requests.submit_request(zk_client, NodeRequest(node_types=["small"], requestor="z"), 300)
    high = requests.submit_request(zk_client, NodeRequest(node_types=["large"], requestor="z"), 100)
    code, out, _ = run_cli(capsys, "-c", cfg, "request-list")
    assert code == 0 and out.index(high.id) < out.index(low.id)
    code, out, _ = run_cli(capsys, "-c", cfg, "request-list", "--json")
    assert [r["id"] for r in json.loads(out)] == [high.id, low.id]


class FakeLauncher:
    """Serves requests exactly as PROTOCOL.md's hand-off says, with plain kazoo calls."""

    def __init__(self, kazoo, fail=False):
        self.kazoo, self.fail = kazoo, fail
        self.seen = set()
        kazoo.ensure_path(paths.REQUESTS)
        kazoo.ChildrenWatch(paths.REQUESTS, self._children)

    def _children(self, children):
        for rid in children:
            if rid not in self.seen:
                self.seen.add(rid)
                threading.Thread(target=self._serve, args=(rid,), daemon=True).start()

    def _serve(self, rid):
        lock = locks.lock_request(self.kazoo, rid)
        req = requests.get_request(self.kazoo, rid)
        if self.fail:
            req.declined_by.append("fake-pool")
            req.set_state(RequestState.FAILED)
        else:
            req.set_state(RequestState.PENDING)
            requests.update_request(self.kazoo, req)
            for label in req.node_types:
                node = ready_node(self.kazoo, allocated_to=rid)
                node.type = [label]
                nodes.update_node(self.kazoo, node)
                req.nodes.append(node.id)
            req.set_state(RequestState.FULFILLED)
        requests.update_request(self.kazoo, req)
        locks.release(lock)


def test_request_waits_prints_nodes_and_returns_them_used(capsys, cfg, zk_client):
    FakeLauncher(zk_client)
    code, out, _ = run_cli(capsys, "-c", cfg, "request", "small", "large", "--json",
                           "--requestor", "ops-check")
    assert code == 0
    result = json.loads(out)
    assert [n["type"] for n in result["nodes"]] == [["small"], ["large"]]
    for n in result["nodes"]:
        assert nodes.get_node(zk_client, n["id"]).state == NodeState.USED
    assert requests.get_request(zk_client, result["request"]) is None


def test_request_hold_keeps_nodes_for_login(capsys, cfg, zk_client):
    FakeLauncher(zk_client)
    # --hold takes no value: a label after it is a label (it once became the reason).
    code, out, _ = run_cli(capsys, "-c", cfg, "request", "--hold", "small", "--reason", "try it")
    assert code == 0 and "ssh zuul@203.0.113.9" in out
    (node,) = nodes.get_nodes(zk_client)
    assert node.state == NodeState.HOLD and node.comment == "try it" and node.type == ["small"]


def test_failed_request_exits_non_zero_and_is_removed(capsys, cfg, zk_client):
    FakeLauncher(zk_client, fail=True)
    code, _, err = run_cli(capsys, "-c", cfg, "request", "nope")
    assert code == cli.EXIT_FAILED and "declined by: fake-pool" in err
    assert requests.get_requests(zk_client) == []


def test_request_timeout_cancels_it(capsys, cfg, zk_client):
    code, _, err = run_cli(capsys, "-c", cfg, "request", "small", "--timeout", "0.3")
    assert code == cli.EXIT_FAILED and "not fulfilled within 0.3s; cancelled" in err
    assert requests.get_requests(zk_client) == []


def test_info_shows_provider_pools_and_nodes(capsys, cfg, zk_client):
    node = ready_node(zk_client)
    code, out, _ = run_cli(capsys, "-c", cfg, "info", "cloud1")
    assert code == 0 and "main" in out and node.id in out
    assert "No pool worker" in out
    code, out, _ = run_cli(capsys, "-c", cfg, "info", "cloud1", "--json")
    info = json.loads(out)
    assert info["pools"] == [{"name": "main", "max_servers": 5, "labels": ["small"]}]
    code, _, err = run_cli(capsys, "-c", cfg, "info", "nowhere")
    assert code == cli.EXIT_FAILED and "'nowhere'" in err


def test_config_validate_exit_codes(capsys, cfg, tmp_path):
    code, out, _ = run_cli(capsys, "-c", cfg, "config-validate")
    assert code == 0 and "valid" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(cfg).read().replace("max-servers: 5", "max-servers: five"))
    code, _, err = run_cli(capsys, "-c", str(bad), "config-validate")
    assert code == 1 and "providers[0].pools[0].max-servers" in err


def test_zookeeper_unreachable_names_servers_without_traceback(tmp_path, zk_tls):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(tmp_path, zk_tls, port=port)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "nodepool.cli", "-c", cfg, "--zk-timeout", "2",
                           "list"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert time.monotonic() - t0 < 45   # gave up after --zk-timeout 2, did not hang to the 60 s kill
    assert proc.returncode == cli.EXIT_ZOOKEEPER
    assert f"127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_config_validate_process_prints_the_loaders_warnings_once(tmp_path):
    # The command logs errors only; the loader's warnings must reach its output anyway.
    path = tmp_path / "nodepool.yaml"
    path.write_text("zookeeper-servers:\n  - host: localhost\nlabels:\n  - name: a\n"
                    "providers:\n  - name: s\n    driver: static\n    rate: 3\n    pools:\n"
                    "      - name: p\n        nodes:\n          - name: h\n            labels: a\n")
    proc = subprocess.run([sys.executable, "-m", "nodepool.cli", "-c", str(path),
                           "config-validate"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (f"{path}: warning: providers[0].rate: has no effect for a static "
                           "provider (Nodepool refuses it); remove it\n")
