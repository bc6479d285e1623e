"""OpenStackAdapter against the simulator: what each openstack key does to the server it makes."""

from __future__ import annotations

import base64
import logging
from typing import Any, Callable

import pytest
from adapter_contract import Loop, Run, context_factory, node_for_delete
from plugins.ossim import PUBLIC_KEY, SimFaults, upload, with_image

from nodepool.drivers.adapter import InstanceStatus, Resources
from nodepool.drivers.openstack import OpenStackAdapter
from nodepool.drivers.openstack.servers import TAG_LABEL, TAG_NODE, TAG_POOL, TAG_PROVIDER
from nodepool.errors import (
    ConfigurationError,
    CostUnknown,
    LaunchFailure,
    QuotaError,
    TransientError,
)

pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]

SERVERS_DETAIL = "GET /compute/v2.1/servers/detail"


@pytest.fixture
def adapter(make_adapter: Callable) -> OpenStackAdapter:
    return make_adapter("sim-fip")


@pytest.fixture
def loop(adapter: OpenStackAdapter, ctl: Any, conn: Any) -> Loop:
    return Loop(adapter, SimFaults(ctl, conn, adapter.provider.name))


@pytest.fixture
def make_context(providers: dict) -> Callable:
    return context_factory(providers["sim-fip"])


def launched(loop: Loop, ctx: Any) -> Run:
    run = loop.create(ctx)
    assert run.complete, run.describe()
    return run


# -- flavors and images ------------------------------------------------------

def test_min_ram_picks_the_smallest_flavor_with_enough_ram(
        loop: Loop, adapter: OpenStackAdapter, ctl: Any, make_context: Callable) -> None:
    run = launched(loop, make_context("roomy"))
    assert ctl.server(run.external_id)["flavor"] == "2"  # m1.small: 2048 MiB; m1.tiny has 512
    pool = adapter.provider.pools["main"]
    adapter.quota_limits()   # costs are told once a limits read has answered
    assert adapter.label_cost(pool, pool.labels["roomy"]) == Resources(instances=1, cores=1,
                                                                        ram=2048)


@pytest.mark.parametrize("label, image, username, python_path", [
    ("small", "cirros-0.6.2", "cirros", "auto"),        # image-name
    ("by-id", "cirros-0.6.2", None, "auto"),            # image-id, no lookup
    ("debian", "debian-12", None, "/usr/bin/python3"),  # the entry's own name
])
def test_cloud_image_by_name_or_id(loop: Loop, ctl: Any, images: dict, make_context: Callable,
                                   label: str, image: str, username: str | None,
                                   python_path: str) -> None:
    ctx = make_context(label)
    run = launched(loop, ctx)
    assert ctl.server(run.external_id)["image"] == images[image]
    assert run.instance.username == username and run.instance.python_path == python_path
    assert ctx.node.image_id == ctx.label.cloud_image


def test_diskimage_label_boots_the_upload_and_records_its_path(
        loop: Loop, ctl: Any, images: dict, make_context: Callable) -> None:
    path = "/nodepool/images/debian-built/builds/0000000007/providers/sim-fip/images/0000000001"
    ctx = with_image(make_context("built"), upload(images["debian-12"], path=path,
                                                    python_path="/usr/bin/python3"))
    run = launched(loop, ctx)
    server = ctl.server(run.external_id)
    assert server["image"] == images["debian-12"]
    assert server["metadata"]["nodepool_image_name"] == "debian-built"
    assert (run.instance.username, run.instance.python_path) == ("debian", "/usr/bin/python3")
    assert ctx.node.image_id == path


def test_diskimage_label_without_an_upload_is_a_configuration_error(
        loop: Loop, ctl: Any, make_context: Callable) -> None:
    run = loop.create(make_context("built"))
    assert isinstance(run.error, ConfigurationError)
    assert str(run.error) == "no ready upload of image debian-built for provider sim-fip"
    assert ctl.count("POST /compute/v2.1/servers") == 0


def test_unknown_flavor_network_or_image_is_a_configuration_error(
        loop: Loop, ctl: Any, make_context: Callable) -> None:
    import dataclasses
    ctx = make_context("small")
    ctx.label = dataclasses.replace(ctx.label, flavor_name="m1.huge")
    run = loop.create(ctx)
    assert isinstance(run.error, ConfigurationError) and "flavor-name 'm1.huge'" in str(run.error)
    ctx = make_context("small")
    ctx.label = dataclasses.replace(ctx.label, networks=("no-such-net",))
    run = loop.create(ctx)
    assert isinstance(run.error, ConfigurationError) and "'no-such-net'" in str(run.error)
    assert ctl.count("POST /compute/v2.1/servers") == 0
    ctx = make_context("by-id")
    ctx.provider = dataclasses.replace(ctx.provider, cloud_images={
        "cirros-by-id": dataclasses.replace(ctx.provider.cloud_images["cirros-by-id"],
                                            image_id="0c6e3f1a-0000-4000-8000-000000000000")})
    run = loop.create(ctx)  # Nova's 400 "Image ... could not be found." through classify()
    assert isinstance(run.error, ConfigurationError) and "HTTP 400" in str(run.error)


# -- what reaches the server ---------------------------------------------------

def test_networks_groups_zone_key_userdata_and_properties_reach_the_server(
        loop: Loop, sim: Any, conn: Any, make_context: Callable) -> None:
    conn.compute.create_keypair(name="nodepool", public_key=PUBLIC_KEY)
    ctx = make_context("dressed", "dressed", tenant_name="tenant-a", requestor="zuul",
                       allocated_to="100-0000000001")
    run = launched(loop, ctx)
    server = sim.state.servers[run.external_id]
    private = conn.network.find_network("private")
    assert [sim.state.ports[p].network_id for p in server.port_ids] == [private.id]
    assert server.security_groups == ["default", "ssh-only"]
    assert (server.az, server.pinned_az, server.key_name) == ("az2", "az2", "nodepool")
    assert base64.b64decode(server.user_data).decode() == "#cloud-config\nruncmd: [true]"
    assert server.name == f"dressed-sim-fip-{ctx.node.id}"
    meta = server.metadata
    assert {k: meta[k] for k in ("team", "cost-center", "tenant", "who")} == {
        "team": "infra", "cost-center": "42", "tenant": "tenant-a", "who": "zuul"}
    assert "broken" not in meta  # a property that cannot be formatted is skipped, as Nodepool does
    assert {k: meta[k] for k in (TAG_PROVIDER, TAG_POOL, TAG_NODE, TAG_LABEL)} == {
        TAG_PROVIDER: "sim-fip", TAG_POOL: "dressed", TAG_NODE: ctx.node.id, TAG_LABEL: "dressed"}
    assert meta["groups"] == "sim-fip,cirros,dressed"


def test_requested_zone_wins_over_the_pools_zones(loop: Loop, sim: Any, conn: Any,
                                                  make_context: Callable) -> None:
    conn.compute.create_keypair(name="nodepool", public_key=PUBLIC_KEY)
    ctx = make_context("dressed", "dressed")
    ctx.az = "nova"
    run = launched(loop, ctx)
    assert sim.state.servers[run.external_id].az == "nova"
    assert run.instance.az == "nova"


def test_hostname_format_names_the_server(make_adapter: Callable, ctl: Any, conn: Any,
                                          providers: dict) -> None:
    adapter = make_adapter("sim-fixed")
    ctx = context_factory(providers["sim-fixed"])()
    run = launched(Loop(adapter, SimFaults(ctl, conn, "sim-fixed")), ctx)
    assert ctl.server(run.external_id)["name"] == f"np-{ctx.node.id}"
    assert run.instance.hostname == f"np-{ctx.node.id}"


def test_boot_from_volume_sends_a_volume_mapping(loop: Loop, adapter: OpenStackAdapter, ctl: Any,
                                                 images: dict, make_context: Callable) -> None:
    run = launched(loop, make_context("volume"))
    server = ctl.server(run.external_id)
    assert server["image"] == ""  # Nova shows no image for a volume-backed server
    [mapping] = server["block_devices"]
    assert (mapping["source_type"], mapping["destination_type"], mapping["uuid"],
            mapping["volume_size"], mapping["delete_on_termination"]) == (
        "image", "volume", images["cirros-0.6.2"], 30, True)
    pool = adapter.provider.pools["main"]
    adapter.quota_limits()
    assert adapter.label_cost(pool, pool.labels["volume"]) == Resources(
        instances=1, cores=1, ram=2048, volumes=1, volume_gb=30)


def test_auto_floating_ip_is_attached_tagged_and_is_the_interface_ip(
        loop: Loop, ctl: Any, conn: Any, make_context: Callable) -> None:
    ctx = make_context("small")
    run = launched(loop, ctx)
    [fip] = ctl.state()["floating_ips"]
    assert fip["port_id"] in ctl.server(run.external_id)["port_ids"]
    assert run.instance.interface_ip == run.instance.public_ipv4 == fip["address"]
    assert run.instance.private_ipv4 and run.instance.private_ipv4 != fip["address"]
    tag = f"{TAG_PROVIDER}=sim-fip {TAG_NODE}={ctx.node.id}"
    [tagged] = list(conn.network.ips(description=tag))
    assert tagged.id == fip["id"]
    assert loop.delete(node_for_delete(ctx, run)).complete
    assert ctl.state()["floating_ips"] == []  # the delete took the node's floating IP along


def test_without_auto_floating_ip_the_private_address_is_the_interface(
        make_adapter: Callable, ctl: Any, conn: Any, providers: dict) -> None:
    loop = Loop(make_adapter("sim-fixed"), SimFaults(ctl, conn, "sim-fixed"))
    run = launched(loop, context_factory(providers["sim-fixed"])())
    assert run.instance.interface_ip == run.instance.private_ipv4 == \
        ctl.server(run.external_id)["fixed_ips"][0]
    assert ctl.state()["floating_ips"] == []


def test_a_cloud_clouds_yaml_calls_private_is_reached_on_its_private_address(
        make_adapter: Callable, sim: Any, ctl: Any, conn: Any, providers: dict,
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """openstacksdk's (and so Nodepool's) `private: true`: no floating IP even with
    auto-floating-ip, and the interface is the private address."""
    path = sim.write_clouds_yaml(str(tmp_path / "clouds.yaml"), "simprivate", private=True)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", path)
    loop = Loop(make_adapter("sim-fip", cloud="simprivate"), SimFaults(ctl, conn, "sim-fip"))
    run = launched(loop, context_factory(providers["sim-fip"])("small"))
    assert ctl.state()["floating_ips"] == []
    assert run.instance.interface_ip == run.instance.private_ipv4 == \
        ctl.server(run.external_id)["fixed_ips"][0]


# -- errors ------------------------------------------------------------------

def test_nova_quota_refusal_is_a_quota_error(loop: Loop, ctl: Any, make_context: Callable) -> None:
    ctl.set_quotas(instances=0)
    run = loop.create(make_context("small"))
    assert isinstance(run.error, QuotaError) and "Quota exceeded for instances" in str(run.error)
    assert ctl.state()["servers"] == []


def test_neutron_floating_ip_quota_is_a_quota_error(loop: Loop, ctl: Any,
                                                    make_context: Callable) -> None:
    ctl.set_quotas(floating_ips=0)
    ctx = make_context("small")
    run = loop.create(ctx)
    assert isinstance(run.error, QuotaError) and "OverQuota" in str(run.error), run.describe()
    assert run.external_id  # the core deletes the server it made
    assert loop.delete(node_for_delete(ctx, run)).complete


def test_500_on_create_is_transient_then_retried(loop: Loop, ctl: Any,
                                                 make_context: Callable) -> None:
    ctl.inject("create_500")
    run = launched(loop, make_context("small"))
    assert [type(e) for e in run.transient] == [TransientError]
    assert run.transient[0].retry_after is None and "HTTP 500" in str(run.transient[0])
    assert len(ctl.state()["servers"]) == 1


def test_429_is_transient_with_the_clouds_retry_after(adapter: OpenStackAdapter, ctl: Any) -> None:
    adapter.list_instances()
    ctl.inject("rate_limit", retry_after=3, path=r"/servers/detail$")
    with pytest.raises(TransientError) as err:
        adapter.list_instances()
    assert err.value.retry_after == 3.0 and "HTTP 429" in str(err.value)


def test_the_sdk_never_retries_inside_our_calls(make_adapter: Callable, ctl: Any, sim: Any,
                                                tmp_path: Any, monkeypatch: Any) -> None:
    # An operator's clouds.yaml asking for retries must not make the SDK sleep in our calls.
    path = sim.write_clouds_yaml(str(tmp_path / "clouds.yaml"), "simcloud", status_code_retries=5,
                                 compute_status_code_retries=5, connect_retries=5)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", path)
    adapter = make_adapter("sim-fip")
    adapter.list_instances()
    ctl.clear_calls()
    ctl.inject("rate_limit", retry_after=0, path=r"/servers/detail$")
    with pytest.raises(TransientError):
        adapter.list_instances()
    assert ctl.count(SERVERS_DETAIL) == 1
    ctl.inject("http_error", status=503, retry_after=0, path=r"^/image/v2/images$")
    with pytest.raises(TransientError):  # the image service: the SDK's own default is 5 retries
        adapter.catalog.cloud_image_id(adapter.provider.cloud_images["cirros"])
    assert ctl.count("GET /image/v2/images") == 1


def test_unreachable_cloud_is_transient(make_adapter: Callable, sim: Any, tmp_path: Any,
                                        monkeypatch: Any) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    import yaml
    cloud = sim.cloud_config()
    cloud["auth"]["auth_url"] = f"http://127.0.0.1:{port}/identity"
    (tmp_path / "clouds.yaml").write_text(yaml.safe_dump({"clouds": {"simcloud": cloud}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    with pytest.raises(TransientError):
        make_adapter("sim-fip").list_instances()


def test_server_in_error_is_a_launch_failure_and_its_console_is_logged(
        loop: Loop, ctl: Any, make_context: Callable, caplog: Any) -> None:
    ctl.inject("create_error", message="Build of instance aborted: disk on fire")
    ctx = make_context("console")
    with caplog.at_level(logging.WARNING, logger="nodepool.drivers.openstack"):
        run = loop.create(ctx)
    assert type(run.error) is LaunchFailure and "disk on fire" in str(run.error)
    [record] = [r for r in caplog.records if "Console log" in r.getMessage()]
    assert f"node={ctx.node.id} provider=sim-fip" in record.getMessage()
    assert "boot failed: Build of instance aborted: disk on fire" in record.getMessage()


def test_console_log_is_not_fetched_unless_asked(loop: Loop, ctl: Any,
                                                 make_context: Callable) -> None:
    ctl.inject("create_error", message="Build of instance aborted: disk on fire")
    assert isinstance(loop.create(make_context("small")).error, LaunchFailure)
    assert ctl.count("POST /compute/v2.1/servers/{id}/action") == 0


# -- deletes -------------------------------------------------------------------

def test_hung_delete_stays_incomplete_until_released(loop: Loop, ctl: Any,
                                                     make_context: Callable) -> None:
    ctx = make_context("small")
    run = launched(loop, ctx)
    ctl.inject("delete_hang")
    deletion = Run(loop.adapter.delete(node_for_delete(ctx, run)))
    loop.drive([deletion], max_ticks=30)
    assert not deletion.complete and deletion.machine.state == "wait-gone"
    assert ctl.server(run.external_id)["deleting"]
    ctl.finish_delete(run.external_id)
    loop.drive([deletion])
    assert deletion.complete and ctl.state()["servers"] == [] and ctl.state()["floating_ips"] == []


def test_delete_issues_the_call_in_its_first_advance(adapter: OpenStackAdapter, ctl: Any,
                                                     conn: Any) -> None:
    # The core's leak cleanup advances a delete machine once per scan, with an old listing.
    from nodepool.drivers.adapter import Listing
    from nodepool.model import Node
    server_id = SimFaults(ctl, conn, "sim-fip").create_leaked_server("0000000077")
    ctl.clear_calls()
    adapter.delete(Node(id="0000000077", provider="sim-fip", external_id=server_id)).advance(
        Listing({}, 0.0))
    # What the simulator received, not the server's state: with its short delete delay the
    # server may already be gone (ctl.server() is None) when a loaded machine asks.
    deletes = [r["path"] for r in ctl.requests() if r["method"] == "DELETE"]
    assert deletes == [f"/compute/v2.1/servers/{server_id}"], ctl.requests()


# -- listings ------------------------------------------------------------------

def test_list_instances_is_one_servers_detail_call_for_all(
        loop: Loop, adapter: OpenStackAdapter, ctl: Any, conn: Any, make_context: Callable) -> None:
    runs = [Run(adapter.create(make_context("small"))) for _ in range(3)]
    loop.drive(runs)
    assert all(r.complete for r in runs)
    faults = SimFaults(ctl, conn, "sim-fip")
    faults.create_untagged_server()
    other = SimFaults(ctl, conn, "sim-fixed").create_leaked_server("0000000005")
    ctl.clear_calls()
    for _ in range(3):
        instances = adapter.list_instances()
    assert ctl.count(SERVERS_DETAIL) == 3 and sum(ctl.calls().values()) == 3
    assert sorted(i.external_id for i in instances) == sorted(r.external_id for r in runs)
    assert other not in {i.external_id for i in instances}
    assert {i.status for i in instances} == {InstanceStatus.READY}


def test_machines_read_the_shared_listing_instead_of_getting_servers(
        loop: Loop, adapter: OpenStackAdapter, ctl: Any, make_context: Callable) -> None:
    ctl.set_timings(boot_delay=0.2)
    runs = [Run(adapter.create(make_context("small"))) for _ in range(4)]
    loop.drive(runs)
    assert all(r.complete for r in runs)
    assert ctl.count("GET /compute/v2.1/servers/{id}") == 0
    assert ctl.count(SERVERS_DETAIL) == loop.ticks
    assert ctl.count("POST /compute/v2.1/servers") == 4


def test_leaked_server_carries_its_node_id_and_untagged_ones_are_never_listed(
        adapter: OpenStackAdapter, ctl: Any, conn: Any) -> None:
    faults = SimFaults(ctl, conn, "sim-fip")
    leaked = faults.create_leaked_server("0000000042")
    untagged = faults.create_untagged_server()
    listed = {i.external_id: i for i in adapter.list_instances()}
    assert listed[leaked].node_id == "0000000042" and listed[leaked].provider == "sim-fip"
    assert untagged not in listed


def test_resumed_submit_without_a_listing_finds_the_server_with_one_filtered_call(
        loop: Loop, adapter: OpenStackAdapter, ctl: Any, make_context: Callable) -> None:
    ctx = make_context("small")
    first = loop.create(ctx, stop_after_saves=1, lose_write=True)  # the create call ran, unsaved
    assert first.saves == [{"state": "submit", "external_id": None}]
    ctl.clear_calls()
    resumed = adapter.create(ctx, first.saves[-1])
    resumed.advance(None)
    assert resumed.external_id == first.external_id and resumed.state == "wait-active"
    assert [(r["route"], r["query"]) for r in ctl.requests()] == [
        ("/compute/v2.1/servers/detail", f"name=%5Esmall-sim-fip-{ctx.node.id}%24")]


# -- quota ---------------------------------------------------------------------

def test_quota_is_the_limit_minus_what_others_use(loop: Loop, adapter: OpenStackAdapter, ctl: Any,
                                                  conn: Any, images: dict,
                                                  make_context: Callable) -> None:
    # Cinder's defaults: 10 volumes, 1000 GB (see test_openstack_volume_quota.py).
    assert adapter.quota_limits() == Resources(instances=10, cores=20, ram=51200,
                                               volumes=10, volume_gb=1000)
    conn.compute.create_server(name="someone-else", flavor_id="3", networks="auto",
                               image_id=images["cirros-0.6.2"])  # m1.medium: 2 cores, 4096 MiB
    launched(loop, make_context("roomy"))  # ours: the core counts it from ZooKeeper
    assert adapter.quota_limits() == Resources(instances=9, cores=18, ram=47104,
                                               volumes=10, volume_gb=1000)
    ctl.set_quotas(instances=-1, cores=-1, ram=-1, volumes=-1, gigabytes=-1)
    assert adapter.quota_limits() is None


def test_label_cost_of_an_unknown_flavor_is_one_instance(adapter: OpenStackAdapter) -> None:
    import dataclasses
    pool = adapter.provider.pools["main"]
    bad = dataclasses.replace(pool.labels["small"], flavor_name="m1.huge")
    adapter.quota_limits()   # reads the flavors
    assert adapter.label_cost(pool, bad) == Resources(instances=1)


def test_label_cost_never_calls_the_cloud(adapter: OpenStackAdapter, ctl: Any) -> None:
    """It runs on the provider loop: with the flavors unread it says so instead of asking."""
    pool = adapter.provider.pools["main"]
    ctl.clear_calls()
    with pytest.raises(CostUnknown):
        adapter.label_cost(pool, pool.labels["small"])
    assert ctl.count("GET /compute/v2.1/flavors/detail") == 0
    adapter.catalog.flavors()   # the flavors alone are not enough: the limits must be read too
    with pytest.raises(CostUnknown):
        adapter.label_cost(pool, pool.labels["small"])
    adapter.quota_limits()
    assert adapter.label_cost(pool, pool.labels["small"]).instances == 1


def test_a_listing_follows_novas_pages(adapter: OpenStackAdapter, ctl: Any, conn: Any) -> None:
    faults = SimFaults(ctl, conn, "sim-fip")
    made = {faults.create_leaked_server(f"000000000{i}") for i in range(5)}
    ctl.clear_calls()
    servers = adapter.cloud.list_servers({"limit": 2})  # Nova's own page size is 1,000
    assert {s["id"] for s in servers} == made
    assert ctl.count(SERVERS_DETAIL) == 3
