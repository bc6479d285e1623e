"""Dedicated hosts: one per node of a `dedicated-host` label, tagged as its instance is.

A host is allocated before its instance (AllocateHosts with a ClientToken, tagged at
creation), found again by its `nodepool_node_id` tag after a crash, and released only
once its instance is gone (delete.py). Hosts are listed whole and matched by tag here,
not with a `tag:` filter: moto's server ignores tag filters on DescribeHosts, and a
region holds few hosts.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from nodepool.drivers.adapter import CloudResource, LaunchContext
from nodepool.drivers.aws import leaks
from nodepool.drivers.aws.instances import TAG_NODE, TAG_PROVIDER, as_tag_list, tags_for, tags_of
from nodepool.errors import TransientError

if TYPE_CHECKING:
    from nodepool.drivers.aws.ec2 import Ec2

log = logging.getLogger("nodepool.drivers.aws")

HOST = "host"
AVAILABLE = "available"
GONE_STATES = frozenset({"released", "released-permanent-failure"})
FAILED_STATES = frozenset({"permanent-failure"}) | GONE_STATES
PAGE_SIZE = 500


def is_dedicated(provider: Any, pool_name: str | None, labels: list[str]) -> bool:
    """Does a node of this pool and label run on a dedicated host (our config)?"""
    pool = provider.pools.get(pool_name or "")
    return pool is not None and any(
        getattr(pool.labels.get(name), "dedicated_host", False) for name in labels)


def allocate(ec2: Ec2, ctx: LaunchContext, token: str) -> str:
    """One host of the label's instance type in the pool's zone; its id."""
    label, pool = ctx.label, ctx.pool
    args = {"AvailabilityZone": pool.availability_zone, "InstanceType": label.instance_type,
            "Quantity": 1, "AutoPlacement": "off", "HostRecovery": "off",
            "ClientToken": token,
            "TagSpecifications": [{"ResourceType": "dedicated-host",
                                   "Tags": as_tag_list(tags_for(ctx))}]}
    answer = ec2.call(f"allocate a dedicated host for node {ctx.node.id}",
                      lambda c: c.allocate_hosts(**args))
    return answer["HostIds"][0]


def our_hosts(ec2: Ec2, provider_name: str) -> list[dict[str, Any]]:
    """The provider's hosts not released yet (tagged with its name), one call per page."""
    found: list[dict[str, Any]] = []
    args: dict[str, Any] = {"MaxResults": PAGE_SIZE}
    while True:
        page = ec2.call("describe hosts", lambda c: c.describe_hosts(**args))
        found.extend(h for h in page.get("Hosts") or []
                     if tags_of(h).get(TAG_PROVIDER) == provider_name
                     and str(h.get("State", "")).lower() not in GONE_STATES)
        token = page.get("NextToken")
        if not token:
            return found
        args["NextToken"] = token


def find(ec2: Ec2, provider_name: str, node_id: str) -> str | None:
    """The live host tagged with `node_id`, if any."""
    return next((h["HostId"] for h in our_hosts(ec2, provider_name)
                 if tags_of(h).get(TAG_NODE) == node_id), None)


def state(ec2: Ec2, host_id: str) -> str | None:
    """The host's state, lower case; None when EC2 does not know it."""
    answer = ec2.call(f"describe host {host_id}",
                      lambda c: c.describe_hosts(HostIds=[host_id]), not_found=None)
    hosts = (answer or {}).get("Hosts") or []
    return str(hosts[0].get("State", "")).lower() if hosts else None


def release(ec2: Ec2, host_id: str, what: str) -> None:
    """ReleaseHosts; a host EC2 could not release yet (its instance still counted on it)
    is a passing error: the caller tries again after the core's backoff."""
    answer = ec2.call(f"release host {host_id} of {what}",
                      lambda c: c.release_hosts(HostIds=[host_id]), not_found=None)
    refused = [u for u in (answer or {}).get("Unsuccessful") or []
               if u.get("ResourceId") == host_id]
    if refused:
        error = refused[0].get("Error") or {}
        raise TransientError(f"release host {host_id} of {what}: {error.get('Code')}: "
                             f"{error.get('Message')}")


def scan(ec2: Ec2, provider_name: str, hosting: set[str]) -> list[CloudResource]:
    """The provider's live hosts with none of our live instances on them (`hosting`: the
    hosts our instances run on): a host goes only after its instance."""
    found = []
    for host in our_hosts(ec2, provider_name):
        if host["HostId"] in hosting:
            continue
        itype = (host.get("HostProperties") or {}).get("InstanceType", "")
        found.append(leaks.tagged(HOST, host["HostId"], host, host.get("AllocationTime"),
                                  f"dedicated host {itype} in {host.get('AvailabilityZone', '')}"))
    return found


def release_leaked(ec2: Ec2, resource: CloudResource) -> None:
    if state(ec2, resource.id) in (None, *GONE_STATES):
        return   # released already (ReleaseHosts on an unknown id is an error)
    release(ec2, resource.id, f"node {resource.node_id}")
    log.info("provider=%s Released leaked dedicated host %s (node %s)", resource.provider,
             resource.id, resource.node_id)
