"""The create state machine: start, submit, wait-active, [attach-ip, create-fip], complete."""

from __future__ import annotations

import base64
import dataclasses
import logging
import random
import re
import time
from typing import TYPE_CHECKING, Any, Mapping

from nodepool.drivers.adapter import (
    CreateStateMachine,
    Instance,
    InstanceStatus,
    LaunchContext,
    Listing,
)
from nodepool.drivers.openstack.errors import classify_fault
from nodepool.drivers.openstack.resources import fip_description, tagged_floating_ips
from nodepool.drivers.openstack.servers import hostname_for, metadata_for
from nodepool.errors import ConfigurationError, DriverError, LaunchFailure

if TYPE_CHECKING:
    from nodepool.drivers.openstack.adapter import OpenStackAdapter

log = logging.getLogger("nodepool.drivers.openstack")

CONSOLE_LINES = 200  # the end of the boot log is where it says what went wrong


@dataclasses.dataclass(frozen=True)
class ImageChoice:
    """Where the server boots from and the login facts that come with the image."""

    external_id: str
    name: str            # cloud-image or diskimage name (groups, nodepool_image_name)
    record: str          # what the node's image_id records
    config_drive: bool | None
    connection: Mapping[str, Any]


def connection_facts(ctx: LaunchContext) -> tuple[str, Mapping[str, Any], bool | None]:
    """(image name, the node's connection fields, config_drive) from config and ctx.image."""
    label, provider = ctx.label, ctx.provider
    if label.diskimage:
        disk = provider.diskimages.get(label.diskimage)
        upload = ctx.image
        facts = {"username": getattr(upload, "username", None) or (disk.username if disk else None),
                 "python_path": getattr(upload, "python_path", None)
                 or (disk.python_path if disk else None),
                 "shell_type": getattr(upload, "shell_type", None)
                 or (disk.shell_type if disk else None),
                 "connection_type": disk.connection_type if disk else None,
                 "connection_port": disk.connection_port if disk else None}
        return label.diskimage, facts, disk.config_drive if disk else None
    image = provider.cloud_images[label.cloud_image]
    facts = {"username": image.username, "python_path": image.python_path,
             "shell_type": image.shell_type, "connection_type": image.connection_type,
             "connection_port": image.connection_port}
    return image.name, facts, image.config_drive


def _name_regex(name: str) -> str:
    # Nova matches `name` as a regular expression; anchor it and escape what is special.
    return "^" + re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", name) + "$"


class OpenStackCreate(CreateStateMachine):
    """Creates one server; every step makes at most one API call once the caches are warm.

    driver_data holds `state`, `external_id` and, once known, `port_id` (the
    port a floating IP goes on). States that precede an irreversible call
    (`submit`, `create-fip`) are named before the call is made; a resumed
    machine looks for what the call may have made (server by node-id tag,
    floating IP by description) before making it again.
    """

    SUBMIT = "submit"
    WAIT = "wait-active"
    ATTACH = "attach-ip"
    FIP = "create-fip"
    COMPLETE = "complete"

    def __init__(self, adapter: OpenStackAdapter, ctx: LaunchContext,
                 driver_data: Mapping[str, Any] | None = None):
        super().__init__(ctx, driver_data)
        self.adapter = adapter
        self.cloud = adapter.cloud
        self.port_id: str | None = dict(driver_data or {}).get("port_id")
        # A listing taken before this time may not show what our last call made.
        self.called_at = time.monotonic()
        # Resumed, or after a failed call: the call may have happened; look before making it.
        self._look_first = driver_data is not None
        self._server: Instance | None = None
        self._args: dict[str, Any] | None = None
        self._image: ImageChoice | None = None
        self.where = f"node={ctx.node.id} provider={adapter.provider.name}"
        self._steps = {self.START: self._start, self.SUBMIT: self._submit,
                       self.WAIT: self._wait_active, self.ATTACH: self._find_port,
                       self.FIP: self._create_fip, self.COMPLETE: self._create_fip}

    def driver_data(self) -> dict[str, Any]:
        data = super().driver_data()
        if self.port_id:
            data["port_id"] = self.port_id
        return data

    def advance(self, listing: Listing | None) -> None:
        try:
            self._steps[self.state](listing)
        except DriverError as e:
            self._look_first = True
            self.called_at = time.monotonic()
            if isinstance(e, ConfigurationError):
                self.adapter.catalog.invalidate()  # a stale cache may be why Nova said 400
            raise

    # -- start: resolve what the server is made of ---------------------------

    def _start(self, listing: Listing | None) -> None:
        self._create_args()
        self.state = self.SUBMIT

    def _choose_image(self) -> ImageChoice:
        ctx, catalog = self.ctx, self.adapter.catalog
        name, facts, config_drive = connection_facts(ctx)
        if ctx.label.diskimage:
            upload = ctx.image
            if upload is None or not getattr(upload, "external_id", None):
                raise ConfigurationError(f"no ready upload of image {ctx.label.diskimage} "
                                         f"for provider {ctx.provider.name}")
            record = getattr(upload, "path", None) or upload.external_id
            return ImageChoice(upload.external_id, name, record, config_drive, facts)
        image = ctx.provider.cloud_images.get(ctx.label.cloud_image)
        if image is None:
            raise ConfigurationError(f"provider {ctx.provider.name}: label {ctx.label.name}: "
                                     f"cloud-image {ctx.label.cloud_image!r} is not configured")
        return ImageChoice(catalog.cloud_image_id(image), name, image.name, config_drive, facts)

    def _create_args(self) -> dict[str, Any]:
        """create_server() arguments; lookups hit the adapter's caches after the first launch."""
        if self._args is not None:
            return self._args
        ctx, catalog = self.ctx, self.adapter.catalog
        label, pool = ctx.label, ctx.pool
        where = f"provider {ctx.provider.name}: pool {pool.name}: label {label.name}"
        flavor = catalog.flavor_for(label)
        self._image = image = self._choose_image()
        args: dict[str, Any] = {
            "name": hostname_for(ctx), "flavor_id": flavor.id,
            "metadata": metadata_for(ctx, image.name),
            # Nova wants `networks` from 2.37 on; "auto" lets it pick the project's network.
            "networks": [{"uuid": catalog.network_id(n, where)} for n in label.networks] or "auto",
        }
        if label.boot_from_volume:
            args["block_device_mapping"] = [{
                "boot_index": 0, "uuid": image.external_id, "source_type": "image",
                "destination_type": "volume", "volume_size": label.volume_size,
                "delete_on_termination": True}]  # the volume goes with the server
        else:
            args["image_id"] = image.external_id
        az = ctx.az or (random.choice(pool.availability_zones) if pool.availability_zones else None)
        if az:
            args["availability_zone"] = az
        if label.key_name:
            args["key_name"] = label.key_name
        if pool.security_groups:
            args["security_groups"] = [{"name": g} for g in pool.security_groups]
        if label.userdata:
            args["user_data"] = base64.b64encode(label.userdata.encode()).decode()
        if image.config_drive is not None:
            args["config_drive"] = image.config_drive
        if pool.auto_floating_ip:
            catalog.networks()  # warm now, so wait-active can tell public from private
        self._args = args
        return args

    # -- submit: the irreversible create call ---------------------------------

    def _submit(self, listing: Listing | None) -> None:
        if self.external_id is None and self._look_first:
            if listing is not None and listing.taken_at < self.called_at:
                return  # wait for a listing that would show a server made before we looked
            found = self._look_up(listing)
            self._look_first = False
            if found is not None:
                log.info("%s Adopting server %s made before the launcher restarted",
                         self.where, found.external_id)
                self.external_id = found.external_id
                self.state = self.WAIT
                return
            if listing is None:
                return  # that was this advance's call; create on the next
        args = self._create_args()
        self.external_id = self.cloud.create_server(
            f"create server {args['name']} for node {self.ctx.node.id}", args,
            default=LaunchFailure)
        self.called_at = time.monotonic()
        self.state = self.WAIT
        log.info("%s Created server %s (%s)", self.where, self.external_id, args["name"])

    def _look_up(self, listing: Listing | None) -> Instance | None:
        """Our server for this node, by its node-id tag, if one exists (not one being deleted)."""
        node_id = self.ctx.node.id or ""
        if listing is not None:
            candidates = [i for i in listing.instances.values() if i.node_id == node_id]
        else:
            servers = self.cloud.list_servers({"name": _name_regex(hostname_for(self.ctx))})
            candidates = [self.adapter.instance(s) for s in servers]
        for instance in candidates:
            if (instance.provider == self.adapter.provider.name and instance.node_id == node_id
                    and instance.status != InstanceStatus.DELETING):
                return instance
        return None

    # -- wait-active ------------------------------------------------------

    def _observe(self, listing: Listing | None) -> tuple[bool, Instance | None]:
        assert self.external_id is not None

        def fetch() -> Instance | None:
            server = self.cloud.get_server(self.external_id)
            return self.adapter.instance(server) if server else None
        return self.observe(listing, fetch)

    def _wait_active(self, listing: Listing | None) -> None:
        seen, instance = self._observe(listing)
        if not seen or (instance is not None and instance.status == InstanceStatus.BUILDING):
            return
        self._server = self._ready(instance)
        if self._wants_floating_ip(self._server):
            self.state = self.ATTACH
        else:
            self._finish(self._server)

    def _ready(self, instance: Instance | None) -> Instance:
        what = f"provider {self.adapter.provider.name}: node {self.ctx.node.id}: " \
               f"server {self.external_id}"
        if instance is None:
            raise LaunchFailure(f"{what} vanished")
        if instance.status == InstanceStatus.DELETING:
            raise LaunchFailure(f"{what} is being deleted")
        if instance.status != InstanceStatus.READY:
            if getattr(self.ctx.label, "console_log", False):
                self._log_console()
            raise classify_fault(instance.fault or "", f"{what} went to ERROR")
        return instance

    def _log_console(self) -> None:
        server_id = self.external_id
        assert server_id is not None
        try:
            output = self.cloud.call(
                f"console log of server {server_id}",
                lambda conn: conn.compute.get_server_console_output(server_id,
                                                                     length=CONSOLE_LINES))
        except DriverError as e:
            log.warning("%s Could not fetch the console log of server %s: %s",
                        self.where, server_id, e)
            return
        text = output.get("output", "") if isinstance(output, dict) else str(output)
        log.warning("%s Console log of server %s:\n%s", self.where, server_id, text.rstrip())

    def _wants_floating_ip(self, instance: Instance) -> bool:
        """Nodepool's rule: no public IPv4 yet, a private one to NAT to, and a cloud with
        an external network; never on a cloud clouds.yaml calls `private`."""
        if not self.ctx.pool.auto_floating_ip or instance.public_ipv4 or not instance.private_ipv4:
            return False
        if self.adapter.cloud.private:
            return False
        return self.adapter.catalog.external_network() is not None

    # -- floating IP ------------------------------------------------------

    def _resume_server(self, listing: Listing | None) -> bool:
        """Learn the server when resumed past wait-active; False while the listing is stale."""
        if self._server is not None:
            return True
        seen, instance = self._observe(listing)
        if not seen:
            return False
        self._server = self._ready(instance)
        if not self._wants_floating_ip(self._server):
            self._finish(self._server)  # it has a public address already
            return False
        return True

    def _find_port(self, listing: Listing | None) -> None:
        if not self._resume_server(listing):
            return
        server = self._server
        assert server is not None and self.external_id is not None
        server_id = self.external_id
        ports = self.cloud.call(f"list ports of server {server_id}",
                                lambda conn: list(conn.network.ports(device_id=server_id)))
        chosen = next((p for p in ports if any(f.get("ip_address") == server.private_ipv4
                                               for f in p.fixed_ips or [])), None)
        chosen = chosen or (ports[0] if ports else None)
        if chosen is None:
            raise LaunchFailure(f"provider {self.adapter.provider.name}: node {self.ctx.node.id}: "
                                f"server {server_id} has no port for a floating IP")
        self.port_id = chosen.id
        self.state = self.FIP

    def _create_fip(self, listing: Listing | None) -> None:
        """Also the step of a machine resumed in `complete`: the server is learned again and
        its floating IP found by description (a cloud may not list it in addresses yet)."""
        if self.complete or not self._resume_server(listing):
            return
        server = self._server
        assert server is not None
        if self.port_id is None:
            self.state = self.ATTACH  # no port recorded: find it first
            return
        description = fip_description(self.adapter.provider.name, self.ctx.node.id)
        if self._look_first:
            found = self.cloud.call("find floating IP", lambda conn: tagged_floating_ips(
                conn, self.adapter.provider.name, self.ctx.node.id))
            self._look_first = False
            attached = [f for f in found if f.port_id]
            if attached:
                self._finish_with_fip(server, attached[0])
                return
            if found:  # made, then the attach did not happen: attach it instead of a second one
                fip = found[0]
                fip = self.cloud.call(f"attach floating IP {fip.id}",
                                      lambda conn: conn.network.update_ip(
                                          fip, port_id=self.port_id),
                                      default=LaunchFailure)
                self._finish_with_fip(server, fip)
            return
        network = self.adapter.catalog.external_network()
        if network is None:
            self._finish(server)  # the external network went away: the private address will do
            return
        port_id = self.port_id
        fip = self.cloud.call(
            f"create floating IP for server {self.external_id}",
            lambda conn: conn.network.create_ip(floating_network_id=network.id, port_id=port_id,
                                                description=description),
            default=LaunchFailure)
        self.called_at = time.monotonic()
        self._finish_with_fip(server, fip)

    def _finish_with_fip(self, server: Instance, fip: Any) -> None:
        address = fip.floating_ip_address
        log.info("%s Floating IP %s (%s) on server %s", self.where, address, fip.id,
                 self.external_id)
        self._finish(dataclasses.replace(server, public_ipv4=address, interface_ip=address))

    # -- complete ---------------------------------------------------------

    def _finish(self, instance: Instance) -> None:
        _, facts, _ = connection_facts(self.ctx)
        fields = {k: v for k, v in facts.items() if v is not None}
        self.instance = dataclasses.replace(instance, **fields)
        # The core copies Instance fields onto the node; image_id is not one of them.
        self.ctx.node.image_id = self._image.record if self._image else self._image_record()
        self.state = self.COMPLETE
        self.complete = True
        log.info("%s Server %s is ready at %s", self.where, self.external_id,
                 self.instance.interface_ip)

    def _image_record(self) -> str | None:
        label = self.ctx.label
        if label.diskimage:
            upload = self.ctx.image
            return getattr(upload, "path", None) or getattr(upload, "external_id", None)
        return label.cloud_image
