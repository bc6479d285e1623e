"""StaticAdapter: the contract cases of a non-launching driver, and slots, keys and labels from config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pytest
from adapter_contract import Loop, NoFaults, StandingAdapterContract, context_factory

from nodepool.config import StaticPool, StaticProvider, load_config, parse_config
from nodepool.drivers import adapter_for
from nodepool.drivers.adapter import Adapter, Resources
from nodepool.drivers.static import StaticAdapter
from nodepool.errors import LaunchFailure
from nodepool.model import Node

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq8lqkmsHnsAzAyE0jAs5nZQd/4qh2SAbxsC7Ib+pUt"

CONFIG = f"""
zookeeper-servers:
  - host: zk.example.org
labels:
  - name: metal
  - name: big-metal
  - name: win
providers:
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
          - name: host1.example.org
            labels: metal
            host-key: "{KEY}"
          - name: host1.example.org
            labels: [metal, big-metal]
            connection-port: 2022
            max-parallel-jobs: 3
            host-key-checking: false
          - name: 192.0.2.10
            labels: [big-metal]
            username: admin
            python-path: /usr/bin/python3
      - name: windows
        nodes:
          - name: win01.example.org
            labels: win
            connection-type: winrm
            shell-type: cmd
            username: Administrator
          - name: "2001:db8::5"
            labels: metal
"""


def load_provider() -> StaticProvider:
    provider = parse_config(CONFIG, "static-test.yaml").providers["lab"]
    assert isinstance(provider, StaticProvider)
    return provider


PROVIDER = load_provider()


class TestStaticAdapterContract(StandingAdapterContract):
    """The contract cases that apply to a driver that launches nothing."""

    @pytest.fixture
    def adapter_factory(self) -> Callable[[], Adapter]:
        return lambda: StaticAdapter(PROVIDER)

    @pytest.fixture
    def faults(self) -> NoFaults:
        return NoFaults()

    @pytest.fixture
    def make_context(self) -> Callable:
        return context_factory(PROVIDER)


class DefaultSlots(StaticAdapter):
    """A standing driver that leaves which slot a node occupies to the Adapter's defaults."""

    standing_slot = Adapter.standing_slot
    standing_outdated = Adapter.standing_outdated


class TestAdapterDefaultsForStandingSlotsKeepTheContract(TestStaticAdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Callable[[], Adapter]:
        return lambda: DefaultSlots(PROVIDER)


@pytest.fixture
def adapter() -> StaticAdapter:
    return StaticAdapter(PROVIDER)


@pytest.fixture
def loop(adapter: StaticAdapter) -> Loop:
    return Loop(adapter, NoFaults())


make_context = context_factory(PROVIDER)


def by_id(adapter: StaticAdapter) -> dict:
    """The standing instances by slot key."""
    return {i.metadata["standing"]: i for i in adapter.standing_instances()}


def test_one_instance_per_max_parallel_jobs_slot(adapter: StaticAdapter) -> None:
    instances = by_id(adapter)
    assert list(instances) == [
        "host1.example.org-0",
        "host1.example.org:2022-0", "host1.example.org:2022-1", "host1.example.org:2022-2",
        "admin@192.0.2.10-0", "Administrator@win01.example.org-0", "2001:db8::5-0"]
    assert [instances[f"host1.example.org:2022-{n}"].slot for n in range(3)] == [0, 1, 2]
    assert {i.pool for i in instances.values()} == {"main", "windows"}


def test_external_id_is_the_host_name_as_nodepool_writes_it(adapter: StaticAdapter) -> None:
    instances = by_id(adapter)
    assert {k: i.external_id for k, i in instances.items()} == {
        "host1.example.org-0": "host1.example.org",
        "host1.example.org:2022-0": "host1.example.org",
        "host1.example.org:2022-1": "host1.example.org",
        "host1.example.org:2022-2": "host1.example.org",
        "admin@192.0.2.10-0": "192.0.2.10",
        "Administrator@win01.example.org-0": "win01.example.org",
        "2001:db8::5-0": "2001:db8::5"}


def test_labels_given_as_a_string_or_a_list(adapter: StaticAdapter) -> None:
    instances = by_id(adapter)
    assert instances["host1.example.org-0"].metadata["labels"] == ["metal"]
    assert instances["host1.example.org:2022-1"].metadata["labels"] == ["metal", "big-metal"]
    assert instances["Administrator@win01.example.org-0"].metadata["labels"] == ["win"]


def test_host_keys_come_from_config_or_are_left_to_the_keyscan(adapter: StaticAdapter) -> None:
    instances = by_id(adapter)
    assert instances["host1.example.org-0"].host_keys == [KEY]
    # host-key-checking off and no key given: nothing to check, as Nodepool.
    assert instances["host1.example.org:2022-0"].host_keys == []
    assert instances["host1.example.org:2022-0"].metadata["host_key_checking"] is False
    # Checked, and no key configured: None asks the core to keyscan.
    assert instances["admin@192.0.2.10-0"].host_keys is None
    # winrm has no ssh host keys.
    assert instances["Administrator@win01.example.org-0"].host_keys == []


def test_connection_facts_come_from_config(adapter: StaticAdapter) -> None:
    instances = by_id(adapter)
    host = instances["admin@192.0.2.10-0"]
    assert (host.interface_ip, host.hostname, host.username, host.python_path,
            host.connection_type, host.connection_port) == (
        "192.0.2.10", "192.0.2.10", "admin", "/usr/bin/python3", "ssh", 22)
    assert host.public_ipv4 == "192.0.2.10" and host.public_ipv6 is None
    win = instances["Administrator@win01.example.org-0"]
    # Port 22 when none is given, whatever the connection type, as Nodepool's loader.
    assert (win.connection_type, win.connection_port, win.shell_type, win.username) == (
        "winrm", 22, "cmd", "Administrator")
    # A winrm host's port is checked before it is registered; an ssh host's is scanned.
    assert win.metadata["check_port"] is True
    assert instances["admin@192.0.2.10-0"].metadata["check_port"] is False
    assert win.public_ipv4 is None and win.public_ipv6 is None  # a name: no DNS lookup here
    assert instances["2001:db8::5-0"].public_ipv6 == "2001:db8::5"
    assert instances["host1.example.org-0"].username == "zuul"
    assert instances["host1.example.org-0"].python_path == "auto"


def test_create_finds_a_slot_recorded_the_nodepool_way(loop: Loop) -> None:
    # Nodepool's static driver wrote external_id = host name, plus port and slot.
    ctx = make_context("big-metal", external_id="host1.example.org",
                       hostname="host1.example.org", connection_port=2022, slot=2)
    run = loop.create(ctx)
    assert run.complete and run.instance is not None, run.describe()
    assert run.instance.external_id == run.external_id == "host1.example.org"
    assert run.instance.metadata["standing"] == "host1.example.org:2022-2"
    assert run.saves[-1] == {"state": "complete", "external_id": "host1.example.org",
                             "standing": "host1.example.org:2022-2"}


def test_create_resumes_from_the_cores_standing_record(adapter: StaticAdapter) -> None:
    ctx = make_context("win", "windows")
    machine = adapter.create(ctx, {"standing": "Administrator@win01.example.org-0"})
    machine.advance(None)
    assert machine.complete and machine.instance is not None
    assert machine.instance.external_id == "win01.example.org"
    assert machine.driver_data()["standing"] == "Administrator@win01.example.org-0"


def test_create_finds_a_slot_recorded_under_the_old_external_id(loop: Loop) -> None:
    # Before external_id was the host name, it held the slot key.
    run = loop.create(make_context("big-metal", external_id="host1.example.org:2022-1"))
    assert run.complete and run.instance is not None, run.describe()
    assert run.instance.metadata["standing"] == "host1.example.org:2022-1"
    assert run.instance.external_id == "host1.example.org"


def test_create_for_a_host_removed_from_config_is_a_launch_failure(loop: Loop) -> None:
    run = loop.create(make_context("metal", external_id="gone.example.org-0"))
    assert isinstance(run.error, LaunchFailure) and "gone.example.org-0" in str(run.error)


def test_create_for_a_label_the_host_does_not_offer_is_a_launch_failure(loop: Loop) -> None:
    run = loop.create(make_context("big-metal", external_id="host1.example.org-0"))
    assert isinstance(run.error, LaunchFailure) and "does not offer label" in str(run.error)


def test_quota_is_the_slots_and_each_node_costs_one_instance(adapter: StaticAdapter) -> None:
    assert adapter.quota_limits() is None
    pool = PROVIDER.pools["main"]
    assert adapter.label_cost(pool, pool.labels["metal"]) == Resources(instances=1)


def test_standing_instances_are_copies(adapter: StaticAdapter) -> None:
    first = adapter.standing_instances()[0]
    first.metadata["labels"].append("tampered")
    assert first.host_keys is not None
    first.host_keys.append("tampered")
    assert adapter.standing_instances()[0] == dataclasses.replace(
        first, metadata={**first.metadata, "labels": ["metal"]}, host_keys=[KEY])


def test_delete_makes_no_change_to_the_standing_hosts(adapter: StaticAdapter, loop: Loop) -> None:
    before = adapter.list_instances()
    deletion = loop.delete(Node(id="0000000001", provider="lab", external_id="192.0.2.10",
                                driver_data={"standing": "admin@192.0.2.10-0"}))
    assert deletion.complete and adapter.list_instances() == before


def test_driver_table_builds_a_static_adapter() -> None:
    assert isinstance(adapter_for(PROVIDER), StaticAdapter)


def test_sample_config_gives_each_host_its_slots() -> None:
    sample = Path(__file__).resolve().parent.parent / "etc" / "nodepool-static.yaml"
    providers = [p for p in load_config(str(sample)).providers.values()
                 if isinstance(p, StaticProvider)]
    assert providers
    for provider in providers:
        hosts = [h for pool in provider.pools.values() if isinstance(pool, StaticPool)
                 for h in pool.nodes]
        slots = StaticAdapter(provider).standing_instances()
        assert len(slots) == sum(h.max_parallel_jobs for h in hosts) > 0
