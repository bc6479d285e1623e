"""Providers spread across launchers on real ZooKeeper: 2/2/2, a join hands over with no
relaunch or leak, a killed launcher's providers are taken over, pins and exclusions hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest
from plugins.launcher_env import LauncherEnv
from plugins.ossim import LAUNCHER_CONFIG
from requestor import NODES, wait_for
from zkhelpers import ZK_HEADER, nodepool_yaml

from nodepool import cli
from nodepool.launcher.daemon import Launcher
from nodepool.launcher.spread import ProviderFilter, assign

PROVIDERS = [f"p{i}" for i in range(1, 7)]
LEASES = "/nodepool/launcher/provider-lease"

PROVIDER = """
  - name: {name}
    cloud: fake
    rate: 0
    cloud-images:
      - name: img
    pools:
      - name: main
        max-servers: 3
        host-key-checking: false
        labels:
          - name: small
            cloud-image: img
            flavor-name: small
"""


def write_config(env: LauncherEnv) -> None:
    text = ZK_HEADER + "zookeeper-timeout: 4\nlabels:\n  - name: small\n    min-ready: 0\n" \
        "webapp:\n  listen_address: 127.0.0.1\n  port: 0\n" \
        "providers:" + "".join(PROVIDER.replace("{name}", p) for p in PROVIDERS)
    with open(env.config_path, "w") as f:
        f.write(nodepool_yaml(env.zk_tls, text.replace("{name}", "{{name}}")))


def holders(kazoo: Any) -> dict[str, str]:
    out = {}
    for name in kazoo.get_children(LEASES) if kazoo.exists(LEASES) else []:
        try:
            out[name] = json.loads(kazoo.get(f"{LEASES}/{name}")[0])["owner"]
        except Exception:   # gone meanwhile
            continue
    return {p: o for p, o in out.items() if p in PROVIDERS}


def spread_as_hashed(env: LauncherEnv, launchers: list[Launcher],
                     serves: dict[str, ProviderFilter] | None = None) -> dict[str, str]:
    """Wait until every provider runs on its owner by the spread, and on nobody else."""
    filters = {la.owner_id: (serves or {}).get(la.hostname, ProviderFilter()) for la in launchers}
    want = assign(PROVIDERS, filters)

    def settled() -> bool:
        running = {p: la.owner_id for la in launchers for p in la.workers}
        return holders(env.kazoo) == want and running == want and \
            sum(len(la.workers) for la in launchers) == len(PROVIDERS)
    wait_for(settled, timeout=30, what=f"providers spread as {want}")
    return want


class Load:
    """Requests of one node each, used and released as they are fulfilled."""

    def __init__(self, env: LauncherEnv):
        self.env, self.rq = env, env.requestor
        self.outstanding: list[str] = []
        self.fulfilled: list[dict] = []

    def submit(self, count: int) -> None:
        self.outstanding += [self.rq.submit(["small"]) for _ in range(count)]

    def finish_all(self, timeout: float = 40) -> None:
        for rid in self.outstanding:
            req = self.rq.wait(rid, timeout=timeout)
            assert req["state"] == "fulfilled", req
            self.fulfilled.append(req)
            self.rq.finish(self.rq.accept(rid, req))
        self.outstanding = []


def test_three_launchers_spread_six_providers_two_each(env: LauncherEnv, capsys: Any) -> None:
    write_config(env)
    launchers = [env.start_launcher(f"nl0{i}", webapp=(i == 1)) for i in range(1, 4)]
    owners = spread_as_hashed(env, launchers)
    assert sorted(Counter(owners.values()).values()) == [2, 2, 2]
    # Who owns what: the web endpoint and `nodepool info`.
    url = f"http://127.0.0.1:{launchers[0].web.port}/provider-list"
    with urllib.request.urlopen(urllib.request.Request(
            url, headers={"Accept": "application/json"}), timeout=10) as resp:
        rows = json.loads(resp.read())
    hosts = {la.owner_id: la.hostname for la in launchers}
    assert [(r["provider"], r["owner"], r["hostname"], r["spread_owner"]) for r in rows] == \
        [(p, owners[p], hosts[owners[p]], owners[p]) for p in PROVIDERS]
    assert cli.main(["-c", env.config_path, "info", "p1"]) == 0
    out = capsys.readouterr().out
    assert f"Owner: {owners['p1']} on {hosts[owners['p1']]}; owner by the spread: " \
        f"{owners['p1']}" in out
    load = Load(env)
    load.submit(6)
    load.finish_all()
    assert {r["state"] for r in load.fulfilled} == {"fulfilled"}


def test_a_joining_launcher_takes_its_share_with_no_relaunch_and_no_leak(
        env: LauncherEnv) -> None:
    write_config(env)
    env.cloud.boot_delay = 0.5   # launches are under way when the hand-over comes
    first = [env.start_launcher("nl01"), env.start_launcher("nl02")]
    spread_as_hashed(env, first)
    created: set[str] = set()
    env.kazoo.ensure_path(NODES)
    env.kazoo.ChildrenWatch(NODES, lambda children: created.update(children))
    load = Load(env)
    load.submit(8)
    wait_for(lambda: env.cloud.creates >= 3, what="launches under way")
    joiner = env.start_launcher("nl03")
    owners = spread_as_hashed(env, first + [joiner])
    assert sorted(Counter(owners.values()).values()) == [2, 2, 2]
    load.submit(4)
    load.finish_all()
    handed = [n for r in load.fulfilled for n in r["nodes"]]
    assert len(handed) == len(set(handed)) == 12
    # Every server was created once, for one node; each node's server is deleted after use.
    try:
        wait_for(lambda: not env.kazoo.get_children(NODES) and not env.cloud.list_servers(),
                 timeout=30, what="every node and server gone after use")
    except AssertionError as e:
        left = {n: env.kazoo.get(f"{NODES}/{n}")[0][250:450] for n in env.kazoo.get_children(NODES)}
        raise AssertionError(f"{e}: nodes {left}, servers {env.cloud.list_servers()}") from None
    assert env.cloud.creates == len(created)
    # Nothing launched twice: a request handed back with its launch under way waits for
    # the provider's next owner, which resumes that launch for it (no spare is left).
    assert env.cloud.creates == 12


def test_pins_and_exclusions_are_honoured(env: LauncherEnv) -> None:
    write_config(env)
    serves = {"nl01": ProviderFilter(only=("p1", "p2", "p3")),
              "nl02": ProviderFilter(exclude=("p[1-3]",))}
    launchers = [env.start_launcher(h, serves=serves.get(h, ProviderFilter()))
                 for h in ("nl01", "nl02", "nl03")]
    owners = spread_as_hashed(env, launchers, serves)
    by_host = {la.owner_id: la.hostname for la in launchers}
    assert all(by_host[owners[p]] in ("nl01", "nl03") for p in ("p1", "p2", "p3"))
    assert all(by_host[owners[p]] in ("nl02", "nl03") for p in ("p4", "p5", "p6"))
    # A pinned launcher that leaves: its providers go only where they may.
    nl01 = launchers[0]
    nl01.stop()
    rest = launchers[1:]
    wait_for(lambda: all(by_host.get(holders(env.kazoo).get(p)) == "nl03"
                         for p in ("p1", "p2", "p3")), timeout=30, what="nl03 runs p1-p3")
    assert not {"p1", "p2", "p3"} & set(rest[0].workers)


SIM_PROVIDER = LAUNCHER_CONFIG[LAUNCHER_CONFIG.index("  - name: sim-cloud"):]


@pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")
def test_a_killed_launchers_providers_are_taken_over_within_the_session_timeout(
        zk_tls: dict, zk_client: Any, ctl: Any, tmp_path: Any) -> None:
    head = LAUNCHER_CONFIG[:LAUNCHER_CONFIG.index("  - name: sim-cloud")]
    text = head + "".join(SIM_PROVIDER.replace("sim-cloud", p) for p in PROVIDERS)
    path = tmp_path / "nodepool.yaml"
    path.write_text(nodepool_yaml(zk_tls, text) + "zookeeper-timeout: 2\n")
    procs = [subprocess.Popen([sys.executable, "-m", "nodepool.launcher.main", "-f",
                               "--no-webapp", "-c", str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ)) for _ in range(3)]
    try:
        ids = {p.pid: f"{os.uname().nodename}:{p.pid}" for p in procs}
        want = assign(PROVIDERS, dict.fromkeys(ids.values(), ProviderFilter()))
        wait_for(lambda: holders(zk_client) == want, timeout=60, what="2/2/2 spread")
        victim = procs[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        alive = {ids[p.pid] for p in procs[1:]}
        wait_for(lambda: set(holders(zk_client)) == set(PROVIDERS)
                 and set(holders(zk_client).values()) <= alive, timeout=20,
                 what="the killed launcher's providers taken over")
        took = time.monotonic() - killed_at
        # Session timeout (2 s) plus a few seconds; the rest kept theirs.
        assert took < 2 + 8, took
        # Then the spread over the two left (a hand-over may follow when shares shift).
        final = assign(PROVIDERS, dict.fromkeys(alive, ProviderFilter()))
        wait_for(lambda: holders(zk_client) == final, timeout=30, what=f"spread as {final}")
        assert sorted(Counter(final.values()).values()) == [3, 3]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=45)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_provider_options_that_leave_nothing_to_own_are_refused(
        env: LauncherEnv, capsys: Any) -> None:
    from nodepool.launcher import main
    write_config(env)
    assert main.main(["-c", env.config_path, "--check-config", "--providers", "nowhere-*"]) == 1
    assert "--providers nowhere-*: no provider" in capsys.readouterr().err
    assert main.main(["-c", env.config_path, "--check-config", "--providers", "p1,p9",
                      "--exclude-providers", "p2"]) == 0
    assert "valid" in capsys.readouterr().out
