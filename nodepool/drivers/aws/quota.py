"""Quota: vCPU quotas per instance family (Service Quotas), instance types' sizes (cached)."""

from __future__ import annotations

import logging
import math
import threading
from typing import TYPE_CHECKING, Any, Iterable

from nodepool.drivers.adapter import Instance, Resources
from nodepool.drivers.aws.codes import quota_code
from nodepool.errors import ConfigurationError, CostUnknown, DriverError

if TYPE_CHECKING:
    from nodepool.drivers.aws.ec2 import Ec2

log = logging.getLogger("nodepool.drivers.aws")

class Quotas:
    """Instance types (vCPUs, MiB) and vCPU quotas, read by quota_limits() off the loop."""

    def __init__(self, ec2: Ec2, provider: Any):
        self.ec2 = ec2
        self.provider = provider
        self._lock = threading.Lock()
        self._types: dict[str, tuple[int, int]] = {}
        self._limits: dict[str, float] = {}
        self._refused: dict[str, str] = {}

    def label_types(self) -> set[str]:
        return {itype for pool in self.provider.pools.values()
                for label in pool.labels.values() for itype in label.instance_types}

    def refresh_types(self, wanted: Iterable[str]) -> None:
        """DescribeInstanceTypes for the types not cached yet (sizes never change).

        A type EC2 refuses (InvalidInstanceType, or the call denied) is recorded as
        refused, so that one bad label neither hides the other labels' costs nor keeps
        every request waiting for a cost that never comes: its launches fail at once
        with EC2's answer (AwsCreate checks `refused()`). Transient errors propagate:
        the core reads again after a backoff.
        """
        with self._lock:
            missing = sorted(set(wanted) - set(self._types) - set(self._refused))
        if not missing:
            return
        try:
            self._describe_types(missing)
        except ConfigurationError as e:
            if len(missing) == 1:
                self._refuse(missing[0], e)
                return
            for itype in missing:   # which one: each alone (once per type, ever)
                try:
                    self._describe_types([itype])
                except ConfigurationError as one:
                    self._refuse(itype, one)

    def _describe_types(self, types: list[str]) -> None:
        found = self.ec2.call("describe instance types",
                              lambda c: c.describe_instance_types(InstanceTypes=types))
        with self._lock:
            for item in found.get("InstanceTypes") or []:
                self._types[item["InstanceType"]] = (
                    int(item["VCpuInfo"]["DefaultVCpus"]), int(item["MemoryInfo"]["SizeInMiB"]))
        for itype in set(types) - set(self._types):
            self._refuse(itype, ConfigurationError("DescribeInstanceTypes does not list it"))

    def _refuse(self, itype: str, error: Exception) -> None:
        log.error("provider=%s Instance type %s refused by EC2; its labels cannot launch: %s",
                  self.provider.name, itype, error)
        with self._lock:
            self._refused[itype] = str(error)

    def refused(self, instance_type: str) -> str | None:
        """Why EC2 refused to describe `instance_type`, if it did."""
        with self._lock:
            return self._refused.get(instance_type)

    def refresh_limits(self) -> None:
        """The vCPU quota of each code our labels use; one without an answer is unlimited."""
        codes = {c for pool in self.provider.pools.values() for label in pool.labels.values()
                 if not label.dedicated_host for itype in label.instance_types
                 if (c := quota_code(itype, label.use_spot))}
        for code in sorted(codes):
            try:
                answer = self.ec2.call(
                    f"get service quota {code}", service="service-quotas",
                    fn=lambda c, code=code: c.get_service_quota(ServiceCode="ec2",
                                                               QuotaCode=code))
            except DriverError as e:
                log.debug("provider=%s No vCPU quota %s: %s", self.provider.name, code, e)
                continue
            with self._lock:
                self._limits[code] = float(answer["Quota"]["Value"])

    def size(self, instance_type: str) -> tuple[int, int] | None:
        with self._lock:
            return self._types.get(instance_type)

    def label_cost(self, label: Any) -> Resources:
        if label.dedicated_host:
            # As Nodepool: an instance on its own dedicated host is not counted against
            # the vCPU quotas (the host is; its quota is not read, doc/aws.md).
            return Resources(instances=1)
        if any(self.refused(itype) for itype in label.instance_types):
            return Resources(instances=1)   # its launch fails before any cloud call
        sizes = []
        for itype in label.instance_types:
            size = self.size(itype)
            if size is None:
                raise CostUnknown(f"provider {self.provider.name}: instance type "
                                  f"{itype} is not read yet")
            sizes.append(size)
        # A fleet may launch any of its types: it is counted as the largest of them, so
        # that quota and max-cores are never overshot whichever EC2 picks.
        return Resources(instances=1, cores=max(c for c, _ in sizes),
                         ram=max(r for _, r in sizes))

    def limits(self, others: list[Instance]) -> Resources | None:
        """The smallest vCPU quota our labels fall under, minus other instances' vCPUs there.

        Resources has one `cores` figure, so a provider whose labels span families gets
        the tightest of their quotas (never launching past any of them).
        """
        with self._lock:
            limits = dict(self._limits)
        if not limits:   # unlimited, as figures: the core reads None as "not read yet"
            return Resources(instances=math.inf, cores=math.inf, ram=math.inf,
                             volumes=math.inf, volume_gb=math.inf)
        code, limit = min(limits.items(), key=lambda item: item[1])
        used = 0
        for instance in others:
            itype = instance.metadata.get("instance_type", "")
            if quota_code(itype) == code and not instance.metadata.get("host_id"):
                used += (self.size(itype) or (0, 0))[0]
        return Resources(instances=math.inf, cores=max(0.0, limit - used), ram=math.inf,
                         volumes=math.inf, volume_gb=math.inf)
