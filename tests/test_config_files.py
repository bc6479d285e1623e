"""The config files as the commands use them (issue 16): the secure file (-s) for the CLI
and the daemon, a CLI that works with problems outside the ZooKeeper keys, TLS files
checked before connecting, and reloads of both files. Real ZooKeeper."""

from __future__ import annotations

import shutil
import time

from requestor import wait_for
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool import cli
from nodepool.launcher import main as launcher_main
from nodepool.model import Node, NodeState
from nodepool.zk import nodes

REST = """
labels:
  - name: small
diskimages:
  - name: ubuntu
    env-vars: {A: plain}
providers:
  - name: fake1
    cloud: fake
    rate: 0
    cloud-images:
      - name: img
    pools:
      - name: main
        host-key-checking: false
        labels:
          - name: small
            cloud-image: img
            flavor-name: small
"""


def zk_part(zk_tls: dict) -> str:
    return nodepool_yaml(zk_tls, ZK_HEADER)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ready_node(kazoo) -> Node:
    node = Node(type=["small"], provider="fake1", pool="main", external_id="srv-1")
    node.set_state(NodeState.BUILDING)
    node.set_state(NodeState.READY)
    return nodes.create_node(kazoo, node)


# -- the CLI with an invalid config ----------------------------------------------------

def test_list_and_delete_work_with_problems_outside_the_zookeeper_keys(
        tmp_path, zk_tls, zk_client, capsys) -> None:
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(zk_part(zk_tls) + REST.replace("flavor-name: small", "flavor-nam: small")
                   + "bogus: 1\n")
    node = ready_node(zk_client)
    code, out, err = run_cli(capsys, "-c", str(cfg), "list")
    assert code == 0 and node.id in out
    assert err.splitlines() == [
        f"nodepool: warning: {cfg} has 3 problem(s) (run `nodepool config-validate` for "
        f"details); only its ZooKeeper settings are used"]
    code, _, err = run_cli(capsys, "-c", str(cfg), "delete", node.id)
    assert code == 0
    assert nodes.get_node(zk_client, node.id).state == NodeState.DELETING


def test_info_needs_the_whole_config_and_says_so(tmp_path, zk_tls, zk_client, capsys) -> None:
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(zk_part(zk_tls) + REST + "bogus: 1\n")
    code, out, err = run_cli(capsys, "-c", str(cfg), "info", "fake1")
    assert code == cli.EXIT_FAILED and out == ""
    assert err == (f"nodepool: info reads the providers of the configuration, and {cfg} has "
                   f"1 problem(s) (run `nodepool config-validate` for details)\n")


def test_a_problem_in_the_zookeeper_keys_still_stops_every_command(
        tmp_path, zk_tls, capsys) -> None:
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(zk_part(zk_tls).replace("chroot:", "chroott:") + REST)
    code, _, err = run_cli(capsys, "-c", str(cfg), "list")
    assert code == cli.EXIT_FAILED
    assert err == f"nodepool: {cfg}: zookeeper-servers[0].chroott: extra key not allowed\n"


# -- the secure file ------------------------------------------------------------------

def test_cli_reads_zookeeper_servers_and_tls_from_the_secure_file(
        tmp_path, zk_tls, zk_client, capsys) -> None:
    cfg, secure = tmp_path / "nodepool.yaml", tmp_path / "secure.conf"
    cfg.write_text(REST)
    secure.write_text(zk_part(zk_tls))
    node = ready_node(zk_client)
    code, out, err = run_cli(capsys, "-c", str(cfg), "-s", str(secure), "list")
    assert (code, err) == (0, "") and node.id in out
    code, out, _ = run_cli(capsys, "-c", str(cfg), "--secure", str(secure), "config-validate")
    assert code == 0


def test_a_named_secure_file_that_is_missing_is_a_clear_error(tmp_path, zk_tls, capsys) -> None:
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(zk_part(zk_tls) + REST)
    missing = tmp_path / "secure.conf"
    code, _, err = run_cli(capsys, "-c", str(cfg), "-s", str(missing), "list")
    assert code == cli.EXIT_FAILED
    assert err == f"nodepool: {missing}: secure file: cannot read the file: No such file or directory\n"
    assert launcher_main.main(["-c", str(cfg), "-s", str(missing), "--check-config"]) == 1


# -- TLS files, before connecting ------------------------------------------------------

def test_missing_tls_file_is_named_before_connecting(tmp_path, zk_tls, capsys) -> None:
    cfg = tmp_path / "nodepool.yaml"
    gone = tmp_path / "gone.pem"
    cfg.write_text(zk_part(zk_tls).replace(zk_tls["cert"], str(gone)) + REST)
    started = time.monotonic()
    code, _, err = run_cli(capsys, "-c", str(cfg), "--zk-timeout", "30", "list")
    assert code == cli.EXIT_FAILED
    assert err == (f"nodepool: {cfg}: zookeeper-tls.cert: cannot read {gone}: "
                   f"No such file or directory\n")
    assert time.monotonic() - started < 25   # did not wait for a connection time-out
    assert launcher_main.main(["-c", str(cfg), "--check-config"]) == 1
    assert f"zookeeper-tls.cert: cannot read {gone}" in capsys.readouterr().err


def test_tls_key_that_does_not_match_is_named(tmp_path, zk_tls, capsys) -> None:
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(zk_part(zk_tls).replace(f"key: {zk_tls['key']}", f"key: {zk_tls['ca']}")
                   + REST)
    code, _, err = run_cli(capsys, "-c", str(cfg), "list")
    assert code == cli.EXIT_FAILED
    assert err.startswith(f"nodepool: {cfg}: zookeeper-tls.cert: {zk_tls['cert']} and "
                          f"{zk_tls['ca']} are not a PEM certificate and its private key (")


# -- the daemon's reloads -------------------------------------------------------------

def test_reload_picks_up_secure_file_changes(env) -> None:
    from nodepool.config import ConfigFiles
    from nodepool.launcher.daemon import Launcher
    from nodepool.testing.fake_adapter import FakeAdapter

    secure = env.tmp_path / "secure.conf"
    secure.write_text(zk_part(env.zk_tls) + "diskimages:\n  - name: ubuntu\n"
                      "    env-vars: {S: one}\n")
    with open(env.config_path, "w") as f:
        f.write(REST)
    launcher = Launcher(ConfigFiles(env.config_path, str(secure)), hostname="nl01",
                        adapter_factory=lambda p: FakeAdapter(p, env.cloud))
    launcher.start()
    env.launchers.append(launcher)
    wait_for(lambda: launcher.workers.get("fake1"), what="provider up")
    assert dict(launcher.config.diskimages["ubuntu"].env_vars) == {"A": "plain", "S": "one"}
    secure.write_text(secure.read_text().replace("S: one", "S: two, T: three"))
    launcher.check_config()
    assert dict(launcher.config.diskimages["ubuntu"].env_vars) == {
        "A": "plain", "S": "two", "T": "three"}


def test_reload_with_a_missing_tls_file_keeps_the_last_good_config(env, tmp_path) -> None:
    cert = tmp_path / "client.pem"
    shutil.copy(env.zk_tls["cert"], cert)
    env.write_config(max_servers=10)
    text = open(env.config_path).read()
    with open(env.config_path, "w") as f:
        f.write(text.replace(env.zk_tls["cert"], str(cert)))
    launcher = env.start_launcher()
    worker = wait_for(lambda: launcher.workers.get("fake1"), what="provider up")
    good = launcher.config
    cert.unlink()
    with open(env.config_path, "w") as f:
        f.write(text.replace(env.zk_tls["cert"], str(cert)).replace("max-servers: 10",
                                                                     "max-servers: 5"))
    launcher.check_config()
    assert launcher.config is good and launcher.workers.get("fake1") is worker


def test_a_launcher_given_the_loaded_config_reads_the_files_no_more(tmp_path, zk_tls) -> None:
    """The daemon's command reads the files to check them, then starts the launcher with
    what it read: once, not twice. The stamp is taken before the read, so an edit made
    while the files were read is a change the first config check picks up."""
    from nodepool.config import ConfigFiles
    from nodepool.launcher.daemon import Launcher
    from nodepool.metrics import NullMetrics

    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(zk_part(zk_tls) + REST)
    files = ConfigFiles(str(cfg))
    config, stamp = files.load_stamped()
    assert stamp == files.stamp()
    cfg.write_text("not: [valid")    # a second read would fail
    launcher = Launcher(files, metrics=NullMetrics(), loaded=(config, stamp))
    assert launcher.config is config
    assert launcher._config_stamp == stamp != files.stamp()   # the edit shows as a change
