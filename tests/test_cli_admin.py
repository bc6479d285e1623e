"""CLI commands and options added for Nodepool parity (issue 16): list --fields and
--detail's data columns, delete --now, erase, request-delete, -l. Against a real
ZooKeeper."""

import json
import threading

import pytest
from test_cli import ready_node, run_cli, write_config

from nodepool import cli
from nodepool.model import NodeState
from nodepool.zk import nodes, paths, requests


@pytest.fixture
def cfg(tmp_path, zk_tls):
    return write_config(tmp_path, zk_tls)


def test_list_fields_chooses_columns_and_an_unknown_one_names_the_valid(capsys, cfg, zk_client):
    node = ready_node(zk_client)
    code, out, _ = run_cli(capsys, "-c", cfg, "list", "--fields", "id,state")
    header = out.splitlines()[1]
    assert code == 0 and "ID" in header and "State" in header and "Provider" not in header
    assert node.id in out
    code, out, _ = run_cli(capsys, "-c", cfg, "list", "--fields", "id,state", "--json")
    assert json.loads(out) == [{"id": node.id, "state": "ready"}]
    code, _, err = run_cli(capsys, "-c", cfg, "list", "--fields", "id,colour")
    assert code == cli.EXIT_FAILED and "unknown field(s) colour" in err and "valid fields: id" in err


def test_list_detail_has_nodepools_user_data_and_driver_data_columns(capsys, cfg, zk_client):
    ready_node(zk_client, user_data={"job": "x"}, driver_data={"server": "srv-1"})
    code, out, _ = run_cli(capsys, "-c", cfg, "list", "--detail")
    assert code == 0 and "User Data" in out and "Driver Data" in out and "srv-1" in out


def deleter(kazoo, node_id: str) -> threading.Thread:
    """Stands in for the provider's launcher: deletes the node's record once a data watch
    sees it `deleting` (the delete runs on this thread, not kazoo's callback thread)."""
    deleting = threading.Event()

    def watch(data, stat, event=None):
        if data and json.loads(data).get("state") == NodeState.DELETING.value:
            deleting.set()
            return False
        return data is not None

    kazoo.DataWatch(paths.node(node_id), watch)

    def run():
        if deleting.wait(30):
            nodes.delete_node(kazoo, node_id)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_delete_now_returns_once_the_launcher_has_deleted_the_node(capsys, cfg, zk_client):
    node = ready_node(zk_client)
    launcher = deleter(zk_client, node.id)
    code, out, _ = run_cli(capsys, "-c", cfg, "delete", "--now", node.id)
    assert code == 0 and f"Node {node.id} deleted." in out
    assert nodes.get_node(zk_client, node.id) is None
    launcher.join()


def test_delete_now_without_a_launcher_gives_up_and_leaves_it_deleting(capsys, cfg, zk_client):
    node = ready_node(zk_client)
    code, _, err = run_cli(capsys, "-c", cfg, "delete", "--now", "--timeout", "0.5", node.id)
    assert code == cli.EXIT_FAILED and "still exists after 0.5s" in err
    assert nodes.get_node(zk_client, node.id).state == NodeState.DELETING


def test_erase_asks_and_without_an_answer_erases_nothing(capsys, cfg, zk_client, monkeypatch):
    node = ready_node(zk_client)
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    code, out, _ = run_cli(capsys, "-c", cfg, "erase", "cloud1")
    assert code == 1 and "Aborting. No data erased." in out
    assert nodes.get_node(zk_client, node.id) is not None


def test_erase_force_removes_the_providers_node_and_build_records_only(capsys, cfg, zk_client):
    ours, other = ready_node(zk_client), ready_node(zk_client)
    other.provider = "cloud2"
    nodes.update_node(zk_client, other)
    build = f"{paths.image_builds('img')}/0000000001"
    zk_client.create(f"{build}/providers/cloud1/images/0000000001", b"{}", makepath=True)
    zk_client.create(f"{build}/providers/cloud2/images/0000000001", b"{}", makepath=True)
    code, out, err = run_cli(capsys, "-c", cfg, "erase", "cloud1", "--force")
    assert code == 0 and "Erased 1 node record(s) and 1 image build record(s)" in err
    assert nodes.get_node(zk_client, ours.id) is None
    assert nodes.get_node(zk_client, other.id) is not None
    assert zk_client.exists(f"{build}/providers/cloud1") is None
    assert zk_client.exists(f"{build}/providers/cloud2") is not None


def test_request_delete_removes_a_no_wait_request(capsys, cfg, zk_client):
    code, out, _ = run_cli(capsys, "-c", cfg, "request", "small", "--no-wait")
    request_id = out.strip()
    assert code == 0 and requests.get_request(zk_client, request_id) is not None
    code, out, _ = run_cli(capsys, "-c", cfg, "request-delete", request_id)
    assert code == 0 and f"Request {request_id} (requested, small) deleted." in out
    assert requests.get_request(zk_client, request_id) is None
    code, _, err = run_cli(capsys, "-c", cfg, "request-delete", request_id)
    assert code == cli.EXIT_FAILED and "not found" in err


def test_logconfig_option_configures_the_cli_logging(capsys, cfg, zk_client, tmp_path):
    log = tmp_path / "cli.log"
    conf = tmp_path / "logging.yaml"
    conf.write_text("version: 1\ndisable_existing_loggers: false\nhandlers:\n  f:\n    class: logging.FileHandler\n"
                    f"    filename: {log}\nroot:\n  level: DEBUG\n  handlers: [f]\n")
    code, _, _ = run_cli(capsys, "-c", cfg, "-l", str(conf), "list")
    assert code == 0 and "Connected to ZooKeeper" in log.read_text()
    code, _, err = run_cli(capsys, "-c", cfg, "-l", str(tmp_path / "missing.yaml"), "list")
    assert code == cli.EXIT_FAILED and "missing.yaml" in err and "Traceback" not in err

