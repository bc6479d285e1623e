"""The OpenStack simulator driven by the real openstacksdk over HTTP: what a driver relies on works."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack import exceptions
from ossim import ControlClient, Simulator, Timings, wait_for
from ossim.testing import wait_for_gone, wait_for_status

BOOT = 0.05
DELETE = 0.05


# `conn` and `ctl` come from tests/plugins/ossim.py, on this module's own `sim`.
@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(timings=Timings(boot_delay=BOOT, delete_delay=DELETE)) as simulator:
        yield simulator


def boot(conn: Any, name: str = "node", **kwargs: Any) -> Any:
    flavor = conn.compute.find_flavor("m1.small")
    image = conn.image.find_image("cirros-0.6.2")
    network = conn.network.find_network("private")
    return conn.compute.create_server(name=name, flavor_id=flavor.id, image_id=image.id,
                                      networks=[{"uuid": network.id}], **kwargs)


def test_sdk_negotiates_a_compute_microversion_above_2_1(conn: Any, ctl: ControlClient) -> None:
    assert conn.compute.get_endpoint_data().max_microversion == (2, 96)
    list(conn.compute.servers())
    sent = [r for r in ctl.requests() if r["path"] == "/compute/v2.1/servers/detail"]
    assert sent and sent[-1]["microversion"] == "compute 2.96"


def test_flavors_are_listed_and_found_by_name_and_id(conn: Any, ctl: ControlClient) -> None:
    names = {f.name: f for f in conn.compute.flavors()}
    assert {"m1.small", "m1.medium", "m1.large"} <= set(names)
    small = conn.compute.find_flavor("m1.small")
    assert (small.ram, small.vcpus) == (2048, 1)
    assert conn.compute.find_flavor(names["m1.large"].id).name == "m1.large"
    assert conn.compute.find_flavor("no-such-flavor") is None


def test_find_image_tries_the_id_first_and_gets_a_real_404(conn: Any, ctl: ControlClient) -> None:
    image = conn.image.find_image("debian-12")
    assert image.status == "active"
    assert conn.image.find_image(image.id).name == "debian-12"
    paths = [(r["path"], r["status"]) for r in ctl.requests()]
    assert ("/image/v2/images/debian-12", 404) in paths
    with pytest.raises(exceptions.NotFoundException) as err:
        conn.compute.get_server("no-such-server")
    assert err.value.response.json() == {"itemNotFound": {
        "code": 404, "message": "Instance no-such-server could not be found."}}


def test_server_goes_build_then_active_with_addresses_and_metadata(conn: Any, ctl: ControlClient) -> None:
    ctl.set_timings(boot_delay=0.5)  # long enough to see BUILD on a loaded machine
    created = boot(conn, "web-1", metadata={"nodepool_node_id": "0000000042"})
    first = conn.compute.get_server(created.id)
    assert first.status == "BUILD" and first.addresses == {}
    server = wait_for_status(conn, created.id)
    assert server.status == "ACTIVE"
    assert server.metadata == {"nodepool_node_id": "0000000042"}
    fixed = server.addresses["private"][0]
    assert fixed["OS-EXT-IPS:type"] == "fixed" and fixed["addr"].startswith("198.18.")
    assert server.availability_zone == "nova" and server.task_state is None
    assert server.vm_state == "active" and server.power_state == 1
    assert server.flavor.original_name == "m1.small"  # embedded flavor since 2.47
    assert ctl.server(created.id)["metadata"] == {"nodepool_node_id": "0000000042"}


def test_server_listing_is_one_call_with_filters(conn: Any, ctl: ControlClient) -> None:
    a, b = boot(conn, "list-a"), boot(conn, "list-b")
    wait_for_status(conn, b.id)
    ctl.clear_calls()
    assert {s.name for s in conn.compute.servers()} == {"list-a", "list-b"}
    assert ctl.count("GET /compute/v2.1/servers/detail") == 1
    assert [s.id for s in conn.compute.servers(name="list-a")] == [a.id]
    assert {s.id for s in conn.compute.servers(status="ACTIVE")} >= {b.id}
    assert list(conn.compute.servers(unknown_filter_is_ignored="x", all_projects=True))


def test_delete_answers_204_then_server_stays_visible_then_404(conn: Any, ctl: ControlClient) -> None:
    ctl.set_timings(delete_delay=0.3)
    server = wait_for_status(conn, boot(conn, "doomed").id)
    conn.compute.delete_server(server.id)
    assert ctl.requests(1)[0]["status"] == 204
    deleting = conn.compute.get_server(server.id)
    assert deleting.task_state == "deleting"
    wait_for_gone(conn, server.id)
    assert conn.compute.find_server(server.id) is None
    assert ctl.state()["ports"] == []


def test_limits_report_quota_and_usage(conn: Any, ctl: ControlClient) -> None:
    wait_for_status(conn, boot(conn, "counted").id)
    absolute = conn.compute.get_limits().absolute
    assert (absolute.instances, absolute.total_cores, absolute.total_ram) == (10, 20, 51200)
    assert (absolute.instances_used, absolute.total_cores_used, absolute.total_ram_used) == (1, 1, 2048)


def test_server_metadata_can_be_read_and_changed(conn: Any, ctl: ControlClient) -> None:
    server = boot(conn, "meta", metadata={"a": "1"})
    conn.compute.set_server_metadata(server.id, b="2")
    assert conn.compute.fetch_server_metadata(server.id).metadata == {"a": "1", "b": "2"}
    conn.compute.delete_server_metadata(server.id, ["a"])
    assert conn.compute.get_server(server.id).metadata == {"b": "2"}


def test_availability_zones_and_unknown_zone(conn: Any, ctl: ControlClient) -> None:
    assert [z.name for z in conn.compute.availability_zones()] == ["nova"]
    with pytest.raises(exceptions.BadRequestException, match="availability zone is not available"):
        boot(conn, "nowhere", availability_zone="mars")


def test_keypairs_generated_and_imported(conn: Any, ctl: ControlClient) -> None:
    generated = conn.compute.create_keypair(name="gen")
    assert generated.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    public = generated.public_key
    imported = conn.compute.create_keypair(name="imported", public_key=public)
    assert imported.fingerprint == generated.fingerprint and imported.private_key is None
    assert {k.name for k in conn.compute.keypairs()} == {"gen", "imported"}
    assert conn.compute.get_keypair("imported").public_key == public.strip()
    with pytest.raises(exceptions.ConflictException):
        conn.compute.create_keypair(name="gen", public_key=public)
    conn.compute.delete_keypair("gen")
    assert conn.compute.find_keypair("gen") is None
    server = boot(conn, "keyed", key_name="imported")
    assert conn.compute.get_server(server.id).key_name == "imported"


def test_console_output(conn: Any, ctl: ControlClient) -> None:
    server = wait_for_status(conn, boot(conn, "console").id)
    output = conn.compute.get_server_console_output(server.id)["output"]
    assert "console login:" in output
    assert len(conn.compute.get_server_console_output(server.id, length=1)["output"].splitlines()) == 1


def test_boot_from_volume_is_accepted_and_recorded(conn: Any, ctl: ControlClient) -> None:
    flavor, image = conn.compute.find_flavor("m1.small"), conn.image.find_image("cirros-0.6.2")
    bdm = [{"boot_index": 0, "uuid": image.id, "source_type": "image", "destination_type": "volume",
            "volume_size": 20, "delete_on_termination": True}]
    created = conn.compute.create_server(name="bfv", flavor_id=flavor.id, block_device_mapping=bdm,
                                         networks="auto")
    server = wait_for_status(conn, created.id)
    assert not server.image or not server.image.get("id")  # Nova shows image "" when booted from volume
    assert server.attached_volumes[0]["delete_on_termination"] is True
    assert ctl.server(created.id)["block_devices"][0]["volume_size"] == 20


def test_floating_ip_create_attach_detach_delete(conn: Any, ctl: ControlClient) -> None:
    server = wait_for_status(conn, boot(conn, "fip").id)
    public = conn.network.find_network("public")
    port = next(conn.network.ports(device_id=server.id))
    fip = conn.network.create_ip(floating_network_id=public.id)
    assert fip.status == "DOWN" and fip.port_id is None
    fip = conn.network.update_ip(fip, port_id=port.id)
    assert fip.status == "ACTIVE" and fip.fixed_ip_address == port.fixed_ips[0]["ip_address"]
    addresses = conn.compute.get_server(server.id).addresses["private"]
    assert {"floating", "fixed"} == {a["OS-EXT-IPS:type"] for a in addresses}
    assert [f.id for f in conn.network.ips(port_id=port.id)] == [fip.id]
    conn.network.update_ip(fip, port_id=None)
    assert len(conn.compute.get_server(server.id).addresses["private"]) == 1
    conn.network.delete_ip(fip)
    assert conn.network.find_ip(fip.id) is None


def test_ports_filter_by_device_and_status(conn: Any, ctl: ControlClient) -> None:
    server = wait_for_status(conn, boot(conn, "ported").id)
    leaked = ctl.leak_port(age=3600)
    [mine] = conn.network.ports(device_id=server.id)
    assert mine.status == "ACTIVE" and mine.device_owner == "compute:nova"
    down = list(conn.network.ports(status="DOWN"))
    assert [p.id for p in down] == [leaked["id"]]
    assert down[0].created_at == leaked["created"]
    conn.network.delete_port(leaked["id"])
    assert list(conn.network.ports(status="DOWN")) == []


def test_networks_subnets_and_security_groups(conn: Any, ctl: ControlClient) -> None:
    private = conn.network.find_network("private")
    assert private.is_router_external is False
    assert [s.cidr for s in conn.network.subnets(network_id=private.id)] == ["198.18.0.0/16"]
    assert [n.name for n in conn.network.networks(is_router_external=True)] == ["public"]
    assert [g.name for g in conn.network.security_groups()] == ["default"]


def test_glance_create_upload_and_import(conn: Any, ctl: ControlClient, tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"qcow2-bytes" * 1000)
    uploaded = conn.image.create_image("uploaded", filename=str(disk), disk_format="qcow2",
                                       container_format="bare", meta={"nodepool_build": "7"})
    image = conn.image.get_image(uploaded.id)
    assert (image.status, image.size) == ("active", 11000)
    assert image.properties["nodepool_build"] == "7"
    assert ctl.count("PUT /image/v2/images/{id}/file") == 1
    staged = conn.image.create_image("staged", filename=str(disk), disk_format="qcow2",
                                     container_format="bare", use_import=True)
    assert conn.image.get_image(staged.id).status == "active"
    assert ctl.count("PUT /image/v2/images/{id}/stage") == 1
    empty = conn.image.create_image("from-file-uri", disk_format="raw", container_format="bare",
                                    allow_duplicates=True)
    conn.image.import_image(empty, method="web-download", uri=disk.as_uri())
    assert conn.image.get_image(empty.id).checksum == image.checksum
    assert [i.id for i in conn.image.images(name="staged")] == [staged.id]
    conn.image.delete_image(staged)
    assert conn.image.find_image("staged") is None


def test_glance_upload_as_the_builder_makes_it(conn: Any, ctl: ControlClient, tmp_path: Path) -> None:
    """The cloud layer's create_image (POST, PUT .../file, GET until active) with the builder's
    arguments; a failed PUT leaves no image (the SDK deletes it); deleting twice is fine."""
    disk = tmp_path / "built.qcow2"
    disk.write_bytes(b"QFI\xfb" + bytes(4092))
    meta = {"nodepool_build_id": "ab12", "nodepool_upload_id": "0000000001"}
    image = conn.create_image("built-1", filename=str(disk), disk_format="qcow2",
                              container_format="bare", md5="0" * 32, sha256="1" * 64, wait=True,
                              timeout=10, allow_duplicates=True, visibility="private", meta=meta)
    assert (image.status, image.size, image.visibility) == ("active", 4096, "private")
    assert image.properties["nodepool_upload_id"] == "0000000001"
    assert image.properties["owner_specified.openstack.md5"] == "0" * 32
    ctl.inject("http_error", status=500, count=1, method="PUT", path=r"/file$")
    with pytest.raises(exceptions.HttpException):
        conn.create_image("built-2", filename=str(disk), disk_format="qcow2", wait=True,
                          timeout=10, allow_duplicates=True, meta=meta)
    assert [i.name for i in conn.image.images() if i.name.startswith("built-")] == ["built-1"]
    conn.image.delete_image(image.id, ignore_missing=True)
    conn.image.delete_image(image.id, ignore_missing=True)
    assert conn.image.find_image("built-1") is None


def test_cli_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent.parent / "tools" / "ossim"),
                             "--port", "0", "--clouds-yaml", str(clouds)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("listening on ")[1].split()[0]
        assert ControlClient(url).info()["auth_url"] == url + "/identity"
        assert url in clouds.read_text()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_wait_for_raises_naming_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_for(lambda: False, timeout=0.05, what="the impossible")


def test_etc_clouds_yaml_points_at_the_cli_default_port() -> None:
    import yaml
    from ossim import DEFAULT_PORT

    shipped = yaml.safe_load((Path(__file__).resolve().parent.parent / "etc" / "clouds.yaml").read_text())
    assert shipped["clouds"]["local"] == Simulator(port=DEFAULT_PORT).cloud_config()
