"""OpenStack leak cleanup: which floating IPs and ports list_resources() gives a provider."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from adapter_contract import Loop, context_factory
from plugins.ossim import SimFaults

from nodepool.drivers.openstack import OpenStackAdapter
from nodepool.drivers.openstack.resources import (
    FLOATING_IP,
    PORT,
    fip_description,
    parse_fip_description,
    tagged_floating_ips,
)

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]


def _public(conn: Any) -> str:
    return conn.network.find_network("public").id


def by_id(adapter: OpenStackAdapter) -> dict[str, Any]:
    return {r.id: r for r in adapter.list_resources()}


def test_fip_description_round_trips() -> None:
    assert parse_fip_description(fip_description("rax-dfw", "0000000042")) == ("rax-dfw",
                                                                               "0000000042")
    assert parse_fip_description("made by hand") is None
    assert parse_fip_description(None) is None


def test_a_node_never_gets_floating_ips_a_neutron_ignoring_the_filter_returned() -> None:
    import types
    mine = types.SimpleNamespace(id="a", description=fip_description("p", "0000000001"))
    others = [types.SimpleNamespace(id="b", description=fip_description("p", "00000000010")),
              types.SimpleNamespace(id="c", description="")]
    deaf = types.SimpleNamespace(network=types.SimpleNamespace(
        ips=lambda **filters: [mine, *others]))  # answers every FIP whatever the filter
    assert tagged_floating_ips(deaf, "p", "0000000001") == [mine]


def test_tagged_floating_ip_is_listed_with_its_node_and_deleted(
        make_adapter: Callable, ctl: Any, conn: Any) -> None:
    adapter = make_adapter("sim-fip")
    fip_id = SimFaults(ctl, conn, "sim-fip").create_leaked_resource("0000000042")
    other = SimFaults(ctl, conn, "sim-fixed").create_leaked_resource("0000000043")
    listed = by_id(adapter)
    assert (listed[fip_id].kind, listed[fip_id].provider, listed[fip_id].node_id) == (
        FLOATING_IP, "sim-fip", "0000000042")
    assert other not in listed  # another provider's
    adapter.delete_resource(listed[fip_id])
    adapter.delete_resource(listed[fip_id])  # gone already: success
    assert [f["id"] for f in ctl.state()["floating_ips"]] == [other]


def test_untagged_floating_ip_on_our_servers_port_is_attributed_to_its_node(
        make_adapter: Callable, ctl: Any, conn: Any) -> None:
    adapter = make_adapter("sim-fixed")  # no floating IPs of its own, no clean-floating-ips
    loop = Loop(adapter, SimFaults(ctl, conn, "sim-fixed"))
    ctx = context_factory(adapter.provider)()
    run = loop.create(ctx)
    assert run.complete
    [port] = ctl.server(run.external_id)["port_ids"]
    fip = conn.network.create_ip(floating_network_id=_public(conn), port_id=port)
    stray = conn.network.create_ip(floating_network_id=_public(conn))  # unattached, untagged
    adapter.list_instances()  # the leak scan lists servers first: that is how the port is known
    listed = by_id(adapter)
    assert listed[fip.id].node_id == ctx.node.id and listed[fip.id].provider == "sim-fixed"
    assert stray.id not in listed  # without clean-floating-ips it is none of our business


def test_clean_floating_ips_lists_unattached_ones_without_a_node(
        make_adapter: Callable, ctl: Any, conn: Any) -> None:
    adapter = make_adapter("sim-fip")  # clean-floating-ips: true
    stray = conn.network.create_ip(floating_network_id=_public(conn))
    resource = by_id(adapter)[stray.id]
    assert (resource.provider, resource.node_id) == ("sim-fip", None)
    adapter.delete_resource(resource)
    assert ctl.state()["floating_ips"] == []


def test_old_down_compute_port_without_a_server_is_listed_and_deleted(
        make_adapter: Callable, ctl: Any) -> None:
    adapter = make_adapter("sim-fip")  # port-cleanup-interval: 60
    old = ctl.leak_port(age=3600)
    young = ctl.leak_port(age=10)
    active = ctl.leak_port(age=3600, status="ACTIVE")
    router = ctl.leak_port(age=3600, device_owner="network:router_interface")
    assert adapter.list_resources() == []  # no server listing yet: cannot tell what is gone
    adapter.list_instances()
    ports = {r.id: r for r in adapter.list_resources() if r.kind == PORT}
    assert set(ports) == {old["id"]}, (young, active, router)
    assert (ports[old["id"]].provider, ports[old["id"]].node_id) == ("sim-fip", None)
    adapter.delete_resource(ports[old["id"]])
    adapter.delete_resource(ports[old["id"]])  # gone already: success
    assert old["id"] not in {p["id"] for p in ctl.state()["ports"]}


def test_down_port_of_a_live_server_is_left_alone(make_adapter: Callable, ctl: Any, conn: Any,
                                                  images: dict) -> None:
    adapter = make_adapter("sim-fip")
    server = conn.compute.create_server(name="stopped", flavor_id="1", networks="auto",
                                        image_id=images["cirros-0.6.2"])
    ctl.leak_port(age=3600, device_id=server.id)  # like the port of a SHUTOFF server
    adapter.list_instances()
    assert [r for r in adapter.list_resources() if r.kind == PORT] == []


def test_down_port_left_by_our_gone_server_names_its_node(make_adapter: Callable, ctl: Any,
                                                          conn: Any) -> None:
    adapter = make_adapter("sim-fip")
    faults = SimFaults(ctl, conn, "sim-fip")
    server_id = faults.create_leaked_server("0000000099")
    adapter.list_instances()  # seen tagged with us
    conn.compute.delete_server(server_id)
    ctl.finish_delete(server_id)
    port = ctl.leak_port(age=3600, device_id=server_id)  # Nova failed to delete it
    adapter.list_instances()
    [resource] = [r for r in adapter.list_resources() if r.kind == PORT]
    assert (resource.id, resource.node_id) == (port["id"], "0000000099")


def test_port_cleanup_interval_zero_turns_port_cleanup_off(make_adapter: Callable,
                                                           ctl: Any) -> None:
    adapter = make_adapter("sim-fip", port_cleanup_interval=0)
    ctl.leak_port(age=3600)
    adapter.list_instances()
    assert [r for r in adapter.list_resources() if r.kind == PORT] == []
