"""AwsAdapter: the Adapter contract over boto3 for one `driver: aws` provider."""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from nodepool.drivers.adapter import (
    Adapter,
    CloudResource,
    CreateStateMachine,
    DeleteStateMachine,
    Instance,
    LaunchContext,
    Resources,
)
from nodepool.drivers.aws import fleet, hosts, leaks
from nodepool.drivers.aws.create import AwsCreate
from nodepool.drivers.aws.delete import AwsDelete
from nodepool.drivers.aws.ec2 import Ec2
from nodepool.drivers.aws.images import Images
from nodepool.drivers.aws.instances import TAG_NODE, TAG_PROVIDER, to_instance
from nodepool.drivers.aws.quota import Quotas
from nodepool.model import Node

log = logging.getLogger("nodepool.drivers.aws")

LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]


class AwsAdapter(Adapter):
    """One provider's EC2 region: launches, deletions, listings, quota, leaked volumes.

    Every API call goes through `ec2.call()`, under the provider's `rate` and through
    the one `classify()`.
    """

    def __init__(self, provider: Any):
        super().__init__(provider)
        self.ec2 = Ec2(provider, fence=lambda: self.fence(),
                       observe=lambda *call: self.observe_call(*call))
        self.images = Images(self.ec2)
        self.quotas = Quotas(self.ec2, provider)
        self.templates = fleet.Templates(self.ec2, provider.name)
        self._lock = threading.Lock()
        self._others: list[Instance] = []
        self._internal = any(p.use_internal_ip for p in provider.pools.values())
        self._dedicated = any(label.dedicated_host for p in provider.pools.values()
                              for label in p.labels.values())
        self._fleets = any(label.fleet for p in provider.pools.values()
                           for label in p.labels.values())

    def create(self, ctx: LaunchContext, driver_data: Mapping[str, Any] | None = None
               ) -> CreateStateMachine:
        return AwsCreate(self, ctx, driver_data)

    def delete(self, node: Node) -> DeleteStateMachine:
        return AwsDelete(self, node)

    # -- listings -----------------------------------------------------------

    def instance(self, raw: Mapping[str, Any]) -> Instance:
        pool = self.provider.pools.get(self._tag(raw, "nodepool_pool_name") or "")
        internal = pool.use_internal_ip if pool is not None else self._internal
        return to_instance(raw, self.provider.region_name, internal)

    @staticmethod
    def _tag(raw: Mapping[str, Any], key: str) -> str | None:
        return next((t["Value"] for t in raw.get("Tags") or [] if t.get("Key") == key), None)

    def list_instances(self) -> list[Instance]:
        """Our live instances, from one paged DescribeInstances filtered by our tag."""
        raw = self.ec2.describe_instances([
            {"Name": f"tag:{TAG_PROVIDER}", "Values": [self.provider.name]},
            {"Name": "instance-state-name", "Values": LIVE_STATES}])
        return [self.instance(r) for r in raw]

    def find_instances(self, node_id: str) -> list[Instance]:
        """Our live instances tagged with `node_id` (one call)."""
        raw = self.ec2.describe_instances([
            {"Name": f"tag:{TAG_PROVIDER}", "Values": [self.provider.name]},
            {"Name": f"tag:{TAG_NODE}", "Values": [node_id]},
            {"Name": "instance-state-name", "Values": LIVE_STATES}])
        return [self.instance(r) for r in raw]

    def get_instance(self, instance_id: str) -> Instance | None:
        """One instance by id; None when unknown or terminated."""
        found = self.ec2.call(f"describe instance {instance_id}",
                              lambda c: c.describe_instances(InstanceIds=[instance_id]),
                              not_found=None)
        for reservation in (found or {}).get("Reservations") or []:
            for raw in reservation.get("Instances") or []:
                if (raw.get("State") or {}).get("Name") != "terminated":
                    return self.instance(raw)
        return None

    # -- leaks --------------------------------------------------------------

    def list_resources(self) -> list[CloudResource]:
        found = leaks.scan_volumes(self.ec2, self.provider.name)
        if self._dedicated:   # hosts, minus those our live instances run on
            hosting = {i.metadata.get("host_id") for i in self.list_instances()}
            found += hosts.scan(self.ec2, self.provider.name, hosting)
        if self._fleets:   # as Nodepool, templates are managed only beside fleet labels
            found += self.templates.unused()
        return found

    def delete_resource(self, resource: CloudResource) -> None:
        if resource.kind == hosts.HOST:
            hosts.release_leaked(self.ec2, resource)
        elif resource.kind == fleet.TEMPLATE:
            self.templates.delete(resource)
        else:
            leaks.delete_volume(self.ec2, resource)

    # -- quota --------------------------------------------------------------

    def quota_limits(self) -> Resources | None:
        """The tightest vCPU quota of our labels' families minus other instances' vCPUs."""
        self.quotas.refresh_types(self.quotas.label_types())
        self.quotas.refresh_limits()
        raw = self.ec2.describe_instances([
            {"Name": "instance-state-name", "Values": LIVE_STATES}])
        others = [self.instance(r) for r in raw
                  if self._tag(r, TAG_PROVIDER) != self.provider.name]
        self.quotas.refresh_types({i.metadata.get("instance_type", "") for i in others} - {""})
        return self.quotas.limits(others)

    def label_cost(self, pool: Any, label: Any) -> Resources:
        return self.quotas.label_cost(label)
