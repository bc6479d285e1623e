"""The aws driver's keys (Nodepool's names and defaults): schema, semantic checks, frozen values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import voluptuous as v

from nodepool.config.checks import (
    CheckContext,
    Finding,
    RawMap,
    check_label_defined,
    duplicates,
    entries,
    text,
)
from nodepool.config.driverapi import BuildContext, Driver, pool_common, provider_common
from nodepool.config.errors import join_path
from nodepool.config.model import (
    DEFAULT_PORTS,
    UNLIMITED,
    Pool,
    PoolLabel,
    Provider,
    by_name,
    empty_map,
    freeze,
)
from nodepool.config.schema import (
    POOL_COMMON,
    PROVIDER_COMMON,
    BadValue,
    Bool,
    CoercedFloat,
    FreeMap,
    Int,
    ListOf,
    MapOf,
    Str,
    Struct,
)
from nodepool.drivers.aws.codes import vcpu_cap

# Nodepool's aws `rate` is operations per second (openstack's is seconds between calls).
DEFAULT_RATE = 2.0
DEFAULT_BOOT_TIMEOUT = 180


@dataclass(frozen=True, kw_only=True)
class AwsCloudImage:
    """A ``cloud-images`` entry: an AMI by id, or the newest AMI matching filters."""

    name: str
    username: str
    image_id: str | None = None
    # ({"Name": ..., "Values": (...)}, ...) as boto3 wants them.
    image_filters: tuple[Mapping[str, Any], ...] = ()
    python_path: str = "auto"
    shell_type: str | None = None
    connection_type: str = "ssh"
    connection_port: int = 22


@dataclass(frozen=True, kw_only=True)
class AwsDiskImage:
    """A provider ``diskimages`` entry: a builder image uploaded to this region."""

    name: str
    username: str = "zuul"
    pause: bool = False
    python_path: str = "auto"
    shell_type: str | None = None
    connection_type: str = "ssh"
    connection_port: int = 22
    tags: Mapping[str, Any] = field(default_factory=empty_map)
    architecture: str = "x86_64"
    ena_support: bool = True
    volume_size: int | None = None
    volume_type: str = "gp3"
    import_method: str = "snapshot"
    imds_support: str | None = None
    iops: int | None = None
    throughput: int | None = None

    @property
    def meta(self) -> Mapping[str, Any]:
        """`tags` under the builder's name for a provider image's metadata (as Nodepool)."""
        return self.tags


@dataclass(frozen=True, kw_only=True)
class AwsLabel(PoolLabel):
    """A pool label: the instance type and the AMI (cloud-image or diskimage) it boots."""

    cloud_image: str | None = None
    instance_type: str = ""
    key_name: str = ""
    ebs_optimized: bool = False
    volume_type: str | None = None
    volume_size: int | None = None
    iops: int | None = None
    throughput: int | None = None
    userdata: str | None = None
    # {"name": ...} or {"arn": ...}
    iam_instance_profile: Mapping[str, str] = field(default_factory=empty_map)
    tags: Mapping[str, Any] = field(default_factory=empty_map)
    dynamic_tags: Mapping[str, Any] = field(default_factory=empty_map)
    use_spot: bool = False
    imdsv2: str | None = None
    dedicated_host: bool = False   # one dedicated host per node (hosts.py)
    # {"instance-types": [...], "allocation-strategy": ...}: CreateFleet (fleet.py)
    fleet: Mapping[str, Any] | None = None

    @property
    def instance_types(self) -> tuple[str, ...]:
        """The types this label may launch: its instance-type, or its fleet's."""
        if self.fleet:
            return tuple(self.fleet.get("instance-types") or ())
        return (self.instance_type,) if self.instance_type else ()


@dataclass(frozen=True, kw_only=True)
class AwsPool(Pool):
    """An aws pool; ``subnet_ids`` are tried in order when one lacks capacity."""

    subnet_id: str | None = None
    security_group_id: str | None = None
    public_ipv4: bool = True
    public_ipv6: bool = False
    use_internal_ip: bool = False
    availability_zone: str | None = None
    max_resources: Mapping[str, int] = field(default_factory=empty_map)

    @property
    def subnet_ids(self) -> tuple[str, ...]:
        """subnet-id may name several subnets, comma-separated: capacity fallback order."""
        if not self.subnet_id:
            return ()
        return tuple(s.strip() for s in self.subnet_id.split(",") if s.strip())


@dataclass(frozen=True, kw_only=True)
class AwsProvider(Provider):
    """A provider with ``driver: aws``. ``rate`` is stored as seconds between calls."""

    region_name: str
    profile_name: str | None = None
    cloud_images: Mapping[str, AwsCloudImage] = field(default_factory=empty_map)
    diskimages: Mapping[str, AwsDiskImage] = field(default_factory=empty_map)
    object_storage: Mapping[str, Any] = field(default_factory=empty_map)
    image_format: str = "raw"
    image_import_timeout: int | None = None
    post_upload_hook: str | None = None
    # Not a key for aws (as Nodepool): the builder's name for an upload.
    image_name_format: str = "{image_name}-{timestamp}"
    max_servers: int | float = UNLIMITED
    max_cores: int | float = UNLIMITED
    max_ram: int | float = UNLIMITED
    max_resources: Mapping[str, int] = field(default_factory=empty_map)


# -- schema ---------------------------------------------------------------

def OneOf(*choices: Any) -> Any:
    def check(value: Any) -> Any:
        if value not in choices:
            raise BadValue(" or ".join(repr(c) for c in choices), value)
        return value
    return check



IMAGE_FILTER = Struct({
    v.Required(v.Any("Name", "name")): Str,
    v.Required(v.Any("Values", "values")): ListOf(Str),
})

CLOUD_IMAGE = Struct({
    v.Required("name"): Str,
    v.Required("username"): Str,
    "image-id": Str,
    "image-filters": ListOf(IMAGE_FILTER),
    "connection-type": Str,
    "connection-port": Int,
    "python-path": Str,
    "shell-type": Str,
})

PROVIDER_DISKIMAGE = Struct({
    v.Required("name"): Str,
    "username": Str,
    "pause": Bool,
    "connection-type": Str,
    "connection-port": Int,
    "python-path": Str,
    "shell-type": Str,
    "architecture": Str,
    "ena-support": Bool,
    "volume-size": Int,
    "volume-type": Str,
    "import-method": OneOf("snapshot", "ebs-direct", "image"),
    "imds-support": OneOf("v2.0", None),
    "iops": Int,
    "throughput": Int,
    "tags": FreeMap,
})

IAM_PROFILE = Struct({"name": Str, "arn": Str})

FLEET = Struct({
    v.Required("instance-types"): ListOf(Str),
    v.Required("allocation-strategy"): OneOf(
        "prioritized", "price-capacity-optimized", "capacity-optimized", "diversified",
        "lowest-price"),
})

POOL_LABEL = Struct({
    v.Required("name"): Str,
    "cloud-image": Str,
    "diskimage": Str,
    "instance-type": Str,
    "fleet": FLEET,
    v.Required("key-name"): Str,
    "ebs-optimized": Bool,
    "volume-type": Str,
    "volume-size": Int,
    "iops": Int,
    "throughput": Int,
    "userdata": Str,
    "iam-instance-profile": IAM_PROFILE,
    "tags": FreeMap,
    "dynamic-tags": FreeMap,
    "use-spot": Bool,
    "imdsv2": OneOf(None, "required", "optional"),
    "dedicated-host": Bool,
})

POOL = Struct({
    **POOL_COMMON,
    v.Required("labels"): ListOf(POOL_LABEL),
    "security-group-id": Str,
    "subnet-id": Str,
    "public-ip-address": Bool,
    "public-ipv4": Bool,
    "public-ipv6": Bool,
    "use-internal-ip": Bool,
    "host-key-checking": Bool,
    "max-cores": Int,
    "max-ram": Int,
    "max-resources": MapOf(Int),
    "availability-zone": Str,
})

PROVIDER = Struct({
    **PROVIDER_COMMON,
    v.Required("region-name"): Str,
    v.Required("pools"): ListOf(POOL),
    "profile-name": Str,
    "rate": CoercedFloat,
    "cloud-images": ListOf(CLOUD_IMAGE),
    "diskimages": ListOf(PROVIDER_DISKIMAGE),
    "object-storage": Struct({v.Required("bucket-name"): Str}),
    "image-format": OneOf("ova", "vhd", "vhdx", "vmdk", "raw"),
    "image-import-timeout": Int,
    "post-upload-hook": Str,
    "max-servers": Int,
    "max-cores": Int,
    "max-ram": Int,
    "max-resources": MapOf(Int),
})


# -- semantic checks ------------------------------------------------------

def check(raw: RawMap, path: str, ctx: CheckContext) -> list[Finding]:
    """References and choices inside one aws provider."""
    images = list(entries(raw, "diskimages", path))
    clouds = list(entries(raw, "cloud-images", path))
    pools = list(entries(raw, "pools", path))
    found = duplicates(((p, text(i, "name")) for p, i in images), "diskimage")
    found += duplicates(((p, text(i, "name")) for p, i in clouds), "cloud-image")
    found += duplicates(((p, text(i, "name")) for p, i in pools), "pool")
    for cpath, image in clouds:
        has_id, has_filters = "image-id" in image, "image-filters" in image
        if has_id == has_filters:
            found.append((cpath, "provide exactly one of image-id or image-filters"))
    if ctx.diskimages is not None:
        for ipath, image in images:
            name = text(image, "name")
            if name is not None and name not in ctx.diskimages:
                found.append((join_path(ipath, "name"), f"diskimage '{name}' is not defined "
                              f"in the top-level diskimages section"))
    found += _check_uploads(raw, path, images)
    image_names = {n for _, i in images if (n := text(i, "name"))}
    cloud_names = {n for _, i in clouds if (n := text(i, "name"))}
    for ppath, pool in pools:
        labels = list(entries(pool, "labels", ppath))
        found += duplicates(((p, text(i, "name")) for p, i in labels), "label")
        for lpath, label in labels:
            found += _check_label(label, lpath, ctx, image_names, cloud_names)
            found += _check_dedicated_host(label, lpath, pool)
    return found


def _check_uploads(raw: RawMap, path: str, images: list[tuple[str, RawMap]]) -> list[Finding]:
    """What the builder's uploads need: a bucket to import from (not for ebs-direct), a raw
    file for ebs-direct, IMDSv2 not by image import."""
    found: list[Finding] = []
    via_s3 = [p for p, i in images if i.get("import-method", "snapshot") != "ebs-direct"]
    if via_s3 and "object-storage" not in raw:
        found.append((join_path(path, "object-storage"), "required with diskimages imported "
                      "from S3 (import-method snapshot or image): the bucket the builder "
                      "uploads image files to (object-storage: {bucket-name: NAME})"))
    image_format = raw.get("image-format", "raw")
    for ipath, image in images:
        if image.get("import-method") == "ebs-direct" and image_format != "raw":
            found.append((join_path(ipath, "import-method"), f"ebs-direct writes the file's "
                          f"bytes as the disk: it needs the provider's image-format raw, "
                          f"not {image_format}"))
        if image.get("imds-support") == "v2.0" and image.get("import-method") == "image":
            found.append((join_path(ipath, "imds-support"), "v2.0 needs import-method "
                          "snapshot or ebs-direct (an image import cannot set IMDS support)"))
    return found


def _check_label(label: RawMap, path: str, ctx: CheckContext,
                 image_names: set[str], cloud_names: set[str]) -> list[Finding]:
    found = check_label_defined(ctx, text(label, "name"), join_path(path, "name"))
    has_image, has_cloud = "diskimage" in label, "cloud-image" in label
    if has_image == has_cloud:
        found.append((path, "set exactly one of diskimage or cloud-image"))
    if ("instance-type" in label) == ("fleet" in label):
        found.append((path, "set exactly one of instance-type or fleet"))
    fleet = label.get("fleet")
    if isinstance(fleet, Mapping) and not fleet.get("instance-types"):
        found.append((join_path(path, "fleet", "instance-types"), "name at least one type"))
    if fleet is not None and label.get("dedicated-host") is True:
        found.append((join_path(path, "fleet"), "a fleet cannot launch on dedicated hosts"))
    image = text(label, "diskimage")
    if image is not None and image not in image_names:
        found.append((join_path(path, "diskimage"),
                      f"diskimage '{image}' is not listed in this provider's diskimages"))
    cloud = text(label, "cloud-image")
    if cloud is not None and cloud not in cloud_names:
        found.append((join_path(path, "cloud-image"),
                      f"cloud-image '{cloud}' is not listed in this provider's cloud-images"))
    return found


def _check_dedicated_host(label: RawMap, path: str, pool: RawMap) -> list[Finding]:
    """What Nodepool requires of a dedicated-host label: a pool AZ (the host is allocated
    in it) and no spot (a spot instance cannot run on a dedicated host)."""
    if label.get("dedicated-host") is not True:
        return []
    found = []
    if label.get("use-spot") is True:
        found.append((join_path(path, "use-spot"),
                      "spot instances cannot be used on dedicated hosts"))
    if not pool.get("availability-zone"):
        found.append((join_path(path, "dedicated-host"), "needs the pool's "
                      "availability-zone (the zone the host is allocated in)"))
    return found


# -- frozen values --------------------------------------------------------

def _rate_interval(raw: Mapping[str, Any]) -> float:
    """Nodepool's operations per second as our seconds between calls (0: no limit)."""
    rate = float(raw.get("rate", DEFAULT_RATE))
    return 0.0 if rate <= 0 or math.isinf(rate) else 1.0 / rate


def build(raw: RawMap, ctx: BuildContext) -> AwsProvider:
    """The AwsProvider value of a valid providers[] entry."""
    common = provider_common(raw)
    common["rate"] = _rate_interval(raw)
    common["boot_timeout"] = raw.get("boot-timeout", DEFAULT_BOOT_TIMEOUT)
    pools = [_build_pool(p, raw) for p in raw.get("pools", [])]
    return AwsProvider(
        **common,
        pools=by_name(pools),
        region_name=raw["region-name"],
        profile_name=raw.get("profile-name"),
        cloud_images=by_name(_build_cloud_image(i) for i in raw.get("cloud-images", [])),
        diskimages=by_name(_build_diskimage(i, ctx) for i in raw.get("diskimages", [])),
        object_storage=freeze(raw.get("object-storage", {})),
        image_format=raw.get("image-format", "raw"),
        image_import_timeout=raw.get("image-import-timeout"),
        post_upload_hook=raw.get("post-upload-hook"),
        max_servers=raw.get("max-servers", UNLIMITED),
        max_cores=_capped(raw.get("max-cores", UNLIMITED), raw.get("max-resources", {}),
                          [label for pool in pools for label in pool.labels.values()]),
        max_ram=raw.get("max-ram", UNLIMITED),
        max_resources=freeze(raw.get("max-resources", {})),
    )


def _capped(max_cores: int | float, max_resources: Mapping[str, int],
            labels: Any) -> int | float:
    """max-cores lowered to the tightest `max-resources` vCPU limit among the quota codes
    the labels' instance types fall under (a launcher keeps one cores figure: a pool
    whose labels span families is held to the smallest of their limits)."""
    cap = vcpu_cap(max_resources, [(itype, label.use_spot) for label in labels
                                   for itype in label.instance_types])
    return max_cores if cap is None else min(max_cores, cap)


def _connection(raw: Mapping[str, Any]) -> dict[str, Any]:
    kind = raw.get("connection-type", "ssh")
    return {"connection_type": kind,
            "connection_port": raw.get("connection-port", DEFAULT_PORTS.get(kind, 22))}


def _build_cloud_image(raw: Mapping[str, Any]) -> AwsCloudImage:
    filters = tuple(freeze({k.capitalize(): val for k, val in f.items()})
                    for f in raw.get("image-filters", ()))
    return AwsCloudImage(name=raw["name"], username=raw["username"],
                         image_id=raw.get("image-id"), image_filters=filters,
                         python_path=raw.get("python-path", "auto"),
                         shell_type=raw.get("shell-type"), **_connection(raw))


def _build_diskimage(raw: Mapping[str, Any], ctx: BuildContext) -> AwsDiskImage:
    top = ctx.diskimages.get(raw["name"])
    return AwsDiskImage(
        name=raw["name"], username=raw.get("username", top.username if top else "zuul"),
        pause=raw.get("pause", False), python_path=raw.get("python-path", "auto"),
        shell_type=raw.get("shell-type"), tags=freeze(raw.get("tags", {})),
        architecture=raw.get("architecture", "x86_64"), ena_support=raw.get("ena-support", True),
        volume_size=raw.get("volume-size"), volume_type=raw.get("volume-type", "gp3"),
        import_method=raw.get("import-method", "snapshot"), imds_support=raw.get("imds-support"),
        iops=raw.get("iops"), throughput=raw.get("throughput"), **_connection(raw))


def _build_pool(raw: Mapping[str, Any], provider: Mapping[str, Any]) -> AwsPool:
    host_key_checking = raw.get("host-key-checking", True)
    labels = [_build_label(label, host_key_checking) for label in raw.get("labels", [])]
    resources = dict(provider.get("max-resources", {}))
    resources.update(raw.get("max-resources", {}))
    common = pool_common(raw, provider)
    common["max_servers"] = raw.get("max-servers", provider.get("max-servers", UNLIMITED))
    return AwsPool(
        **common,
        labels=by_name(labels),
        subnet_id=raw.get("subnet-id"),
        security_group_id=raw.get("security-group-id"),
        public_ipv4=raw.get("public-ip-address", raw.get("public-ipv4", True)),
        public_ipv6=raw.get("public-ipv6", False),
        use_internal_ip=raw.get("use-internal-ip", False),
        host_key_checking=host_key_checking,
        max_cores=_capped(raw.get("max-cores", provider.get("max-cores", UNLIMITED)),
                          resources, labels),
        max_ram=raw.get("max-ram", provider.get("max-ram", UNLIMITED)),
        max_resources=freeze(resources),
        availability_zone=raw.get("availability-zone"),
    )


def _build_label(raw: Mapping[str, Any], pool_host_key_checking: bool) -> AwsLabel:
    return AwsLabel(
        name=raw["name"],
        diskimage=raw.get("diskimage"),
        cloud_image=raw.get("cloud-image"),
        instance_type=raw.get("instance-type", ""),
        key_name=raw["key-name"],
        ebs_optimized=raw.get("ebs-optimized", False),
        volume_type=raw.get("volume-type"),
        volume_size=raw.get("volume-size"),
        iops=raw.get("iops"),
        throughput=raw.get("throughput"),
        userdata=raw.get("userdata"),
        iam_instance_profile=freeze(raw.get("iam-instance-profile", {})),
        tags=freeze(raw.get("tags", {})),
        dynamic_tags=freeze(raw.get("dynamic-tags", {})),
        use_spot=raw.get("use-spot", False),
        imdsv2=raw.get("imdsv2"),
        dedicated_host=raw.get("dedicated-host", False),
        fleet=freeze(raw["fleet"]) if "fleet" in raw else None,
        host_key_checking=pool_host_key_checking,
    )


DRIVER = Driver(name="aws", schema=PROVIDER, check=check, build=build)
