"""The create state machine: start -> submit -> wait-running -> complete."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Mapping

from nodepool.drivers.adapter import (
    CreateStateMachine,
    Instance,
    InstanceStatus,
    LaunchContext,
    Listing,
)
from nodepool.drivers.aws import fleet, hosts
from nodepool.drivers.aws.images import root_mapping
from nodepool.drivers.aws.instances import as_tag_list, tags_for
from nodepool.errors import CapacityError, ConfigurationError, DriverError, LaunchFailure

if TYPE_CHECKING:
    from nodepool.drivers.aws.adapter import AwsAdapter

log = logging.getLogger("nodepool.drivers.aws")

# What RunInstances creates, each tagged at creation (atomic: no untagged window). Nodepool
# tags instances and volumes; the interfaces carry the same tags here (doc/aws.md "Tags").
TAGGED_AT_LAUNCH = ("instance", "volume", "network-interface")


def connection_facts(ctx: LaunchContext) -> dict[str, Any]:
    """The node's login fields from its cloud-image or provider diskimage (and upload)."""
    label, provider = ctx.label, ctx.provider
    if label.diskimage:
        image = provider.diskimages.get(label.diskimage)
        upload = ctx.image
        return {"username": getattr(upload, "username", None) or getattr(image, "username", None),
                "python_path": getattr(image, "python_path", None),
                "shell_type": getattr(image, "shell_type", None),
                "connection_type": getattr(image, "connection_type", None),
                "connection_port": getattr(image, "connection_port", None)}
    image = provider.cloud_images[label.cloud_image]
    return {"username": image.username, "python_path": image.python_path,
            "shell_type": image.shell_type, "connection_type": image.connection_type,
            "connection_port": image.connection_port}


class AwsCreate(CreateStateMachine):
    """Creates one instance; idempotent by its node-id tag and a ClientToken.

    driver_data holds `state`, `external_id`, `token` (the ClientToken: EC2 answers a
    repeated RunInstances with the same token with the instance it made), `subnet`
    (the index in the pool's subnets being tried; InsufficientInstanceCapacity moves
    to the next one, then the launch fails with a CapacityError) and, for a
    dedicated-host label, `host`: the host allocated for the instance (hosts.py).
    """

    HOST = "allocate-host"
    HOST_WAIT = "wait-host"
    SUBMIT = "submit"
    WAIT = "wait-running"
    COMPLETE = "complete"

    def __init__(self, adapter: AwsAdapter, ctx: LaunchContext,
                 driver_data: Mapping[str, Any] | None = None):
        super().__init__(ctx, driver_data)
        data = dict(driver_data or {})
        self.adapter = adapter
        self.token: str = data.get("token") or f"{ctx.node.id}-{uuid.uuid4().hex[:12]}"
        self.subnet: int = int(data.get("subnet", 0))
        self.host_id: str | None = data.get("host")
        self.called_at = time.monotonic()
        self._resumed = driver_data is not None
        self._look_first = self._resumed
        self._image_id: str | None = None
        self.where = f"node={ctx.node.id} provider={adapter.provider.name}"
        self._steps = {self.START: self._start, self.HOST: self._allocate_host,
                       self.HOST_WAIT: self._wait_host, self.SUBMIT: self._submit,
                       self.WAIT: self._wait, self.COMPLETE: self._wait}

    def driver_data(self) -> dict[str, Any]:
        data = {**super().driver_data(), "token": self.token, "subnet": self.subnet}
        if self.host_id is not None:
            data["host"] = self.host_id
        return data

    def advance(self, listing: Listing | None) -> None:
        try:
            self._steps[self.state](listing)
        except DriverError:
            self._look_first = True
            self.called_at = time.monotonic()
            raise

    # -- start: which AMI -----------------------------------------------------

    def _start(self, listing: Listing | None) -> None:
        for itype in self.ctx.label.instance_types:
            refused = self.adapter.quotas.refused(itype)
            if refused:
                raise ConfigurationError(f"provider {self.ctx.provider.name}: label "
                                         f"{self.ctx.label.name}: instance type "
                                         f"{itype}: {refused}")
        # The AMI and its root device: at most one call (DescribeImages by filters or by
        # id; a filters lookup caches the description it found), cached by the adapter.
        self.adapter.images.describe(self._image())
        self.state = self.HOST if self.ctx.label.dedicated_host and self.host_id is None \
            else self.SUBMIT

    def _image(self) -> str:
        if self._image_id is not None:
            return self._image_id
        ctx = self.ctx
        if ctx.label.diskimage:
            upload = ctx.image
            if upload is None or not getattr(upload, "external_id", None):
                raise ConfigurationError(f"no ready upload of image {ctx.label.diskimage} "
                                         f"for provider {ctx.provider.name}")
            self._image_id = upload.external_id
        else:
            image = ctx.provider.cloud_images.get(ctx.label.cloud_image)
            if image is None:
                raise ConfigurationError(f"provider {ctx.provider.name}: label {ctx.label.name}: "
                                         f"cloud-image {ctx.label.cloud_image!r} is not configured")
            self._image_id = self.adapter.images.image_id(image)
        return self._image_id

    # -- a dedicated host (hosts.py) -------------------------------------------

    def _allocate_host(self, listing: Listing | None) -> None:
        provider = self.adapter.provider.name
        if self._look_first:   # resumed, or after an error: did an allocation land?
            self._look_first = False
            self.host_id = hosts.find(self.adapter.ec2, provider, self.ctx.node.id or "")
            if self.host_id is not None:
                log.info("%s Found dedicated host %s", self.where, self.host_id)
                self.state = self.HOST_WAIT
            return
        self.host_id = hosts.allocate(self.adapter.ec2, self.ctx, f"{self.token}-host")
        self.called_at = time.monotonic()
        self.state = self.HOST_WAIT
        log.info("%s Allocated dedicated host %s", self.where, self.host_id)

    def _wait_host(self, listing: Listing | None) -> None:
        assert self.host_id is not None
        state = hosts.state(self.adapter.ec2, self.host_id)
        if state == hosts.AVAILABLE:
            self.state = self.SUBMIT
            # Resumed: an instance may have been asked for already; look before asking.
            self._look_first = self._look_first or self._resumed
        elif state is None or state in hosts.FAILED_STATES:
            raise LaunchFailure(f"provider {self.adapter.provider.name}: node "
                                f"{self.ctx.node.id}: dedicated host {self.host_id} is "
                                f"{state or 'unknown to EC2'}")

    # -- submit -------------------------------------------------------------

    def _submit(self, listing: Listing | None) -> None:
        if self._look_first:
            found = self._look_up(listing)
            if found is False:
                return   # the listing predates our last call: wait for a newer one
            self._look_first = False
            if found is not None:
                self._adopt(found.external_id, "Found")
                return
            if listing is None:
                return   # that lookup was this advance's call
        if not self.adapter.images.described(self._image_id):
            self._start(listing)   # resumed in submit: read the AMI first (this advance's call)
            return
        args = self._run_args()
        subnets = self.ctx.pool.subnet_ids
        try:
            if self.ctx.label.fleet:
                instance_id = self._create_fleet(args)
            else:
                instance_id = self.adapter.ec2.call(
                    f"run instances for node {self.ctx.node.id}",
                    lambda c: c.run_instances(**args),
                    default=LaunchFailure)["Instances"][0]["InstanceId"]
        except CapacityError as e:
            if not self.ctx.label.fleet and self.subnet + 1 < len(subnets):
                log.warning("%s No capacity in subnet %s (%s); trying subnet %s", self.where,
                            subnets[self.subnet], e, subnets[self.subnet + 1])
                self.subnet += 1
                self.called_at = time.monotonic()
                return
            raise
        self.called_at = time.monotonic()
        self._adopt(instance_id, "Created")

    def _create_fleet(self, args: dict[str, Any]) -> str:
        """One instance by CreateFleet (fleet.py): the label's launch template, made on
        its first launch, and every fleet instance type in every pool subnet."""
        pool, templates = self.ctx.pool, self.adapter.templates
        name = templates.ensure(fleet.template_data(args, pool.security_group_id))
        specs = [s for s in args["TagSpecifications"] if s["ResourceType"] in fleet.TAGGED]
        kwargs = fleet.fleet_args(self.ctx.label, name, args["ImageId"], pool.subnet_ids,
                                  self.token, specs)
        what = f"create fleet for node {self.ctx.node.id}"
        try:
            answer = self.adapter.ec2.call(what, lambda c: c.create_fleet(**kwargs),
                                           default=LaunchFailure)
        except DriverError as e:
            if fleet.is_template_gone(e):
                templates.forget(name)
                raise fleet.gone_template_error(what, e) from e
            raise
        return fleet.launched(answer, f"provider {self.adapter.provider.name}: {what}")

    def _adopt(self, instance_id: str, verb: str) -> None:
        self.external_id = instance_id
        self.state = self.WAIT
        log.info("%s %s instance %s", self.where, verb, instance_id)

    def _look_up(self, listing: Listing | None) -> Instance | None | bool:
        """Our live instance for this node by its node-id tag; False if the listing is stale."""
        node_id = self.ctx.node.id or ""
        if listing is None:
            candidates = self.adapter.find_instances(node_id)
        elif listing.taken_at < self.called_at:
            return False
        else:
            candidates = [i for i in listing.instances.values() if i.node_id == node_id]
        return next((i for i in candidates if i.provider == self.adapter.provider.name
                     and i.status != InstanceStatus.DELETING), None)

    def _run_args(self) -> dict[str, Any]:
        ctx, label, pool = self.ctx, self.ctx.label, self.ctx.pool
        tags = as_tag_list(tags_for(ctx))
        args: dict[str, Any] = {
            "ImageId": self._image(), "InstanceType": label.instance_type, "MinCount": 1,
            "MaxCount": 1, "KeyName": label.key_name, "ClientToken": self.token,
            "TagSpecifications": [{"ResourceType": kind, "Tags": tags}
                                  for kind in TAGGED_AT_LAUNCH],
        }
        subnets = pool.subnet_ids
        if subnets:
            eni: dict[str, Any] = {"DeviceIndex": 0, "SubnetId": subnets[self.subnet],
                                   "AssociatePublicIpAddress": pool.public_ipv4,
                                   "DeleteOnTermination": True}
            if pool.security_group_id:
                eni["Groups"] = [pool.security_group_id]
            if pool.public_ipv6:
                eni["Ipv6AddressCount"] = 1
            args["NetworkInterfaces"] = [eni]
        elif pool.security_group_id:
            args["SecurityGroupIds"] = [pool.security_group_id]
        az = ctx.az or pool.availability_zone
        if az and not subnets:
            args["Placement"] = {"AvailabilityZone": az}
        if self.host_id is not None:
            args.setdefault("Placement", {}).update(
                {"Tenancy": "host", "HostId": self.host_id, "Affinity": "host"})
        if label.ebs_optimized:
            args["EbsOptimized"] = True
        if label.userdata:
            args["UserData"] = label.userdata   # boto3 base64-encodes it for RunInstances
        profile = label.iam_instance_profile or {}
        if profile:
            args["IamInstanceProfile"] = ({"Name": profile["name"]} if "name" in profile
                                          else {"Arn": profile["arn"]})
        if label.use_spot:
            args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        if label.imdsv2 == "required":
            args["MetadataOptions"] = {"HttpTokens": "required", "HttpEndpoint": "enabled"}
        elif label.imdsv2 == "optional":
            args["MetadataOptions"] = {"HttpTokens": "optional", "HttpEndpoint": "enabled"}
        root = root_mapping(self.adapter.images.describe(self._image()), label)
        if root is not None:
            args["BlockDeviceMappings"] = [root]
        return args

    # -- wait-running --------------------------------------------------------

    def _wait(self, listing: Listing | None) -> None:
        if self.complete:
            return
        assert self.external_id is not None
        seen, instance = self.observe(listing, lambda: self.adapter.get_instance(self.external_id))
        if not seen or (instance is not None and instance.status == InstanceStatus.BUILDING):
            return
        what = f"provider {self.adapter.provider.name}: node {self.ctx.node.id}: " \
               f"instance {self.external_id}"
        if instance is None or instance.status == InstanceStatus.DELETING:
            raise LaunchFailure(f"{what} was terminated (a reclaimed spot instance?)")
        if instance.status != InstanceStatus.READY:
            raise LaunchFailure(f"{what}: {instance.fault or 'not running'}")
        fields = {k: v for k, v in connection_facts(self.ctx).items() if v is not None}
        self.instance = dataclasses.replace(instance, **fields)
        self.ctx.node.image_id = (getattr(self.ctx.image, "path", None)
                                  or self.ctx.label.cloud_image or self._image_id)
        self.state = self.COMPLETE
        self.complete = True
        log.info("%s Instance %s is running at %s", self.where, self.external_id,
                 self.instance.interface_ip)
