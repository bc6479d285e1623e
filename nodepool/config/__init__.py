"""Load nodepool.yaml into frozen, comparable values (public API of the config package)."""

from nodepool.config.diff import ProviderChanges, provider_changes
from nodepool.config.errors import ConfigError, Problem
from nodepool.config.files import ConfigFiles
from nodepool.config.loader import load_config, parse_config, validate_config_file
from nodepool.config.model import (
    UNLIMITED,
    Config,
    DiskImage,
    Label,
    Pool,
    PoolLabel,
    Provider,
    TenantLimits,
    WebApp,
    ZooKeeperServer,
    ZooKeeperTLS,
)
from nodepool.config.openstack import (
    CloudImage,
    OpenStackLabel,
    OpenStackPool,
    OpenStackProvider,
    ProviderDiskImage,
)
from nodepool.config.static import StaticNode, StaticPool, StaticProvider

__all__ = [
    "UNLIMITED",
    "CloudImage",
    "Config",
    "ConfigError",
    "ConfigFiles",
    "DiskImage",
    "Label",
    "OpenStackLabel",
    "OpenStackPool",
    "OpenStackProvider",
    "Pool",
    "PoolLabel",
    "Problem",
    "Provider",
    "ProviderChanges",
    "ProviderDiskImage",
    "StaticNode",
    "StaticPool",
    "StaticProvider",
    "TenantLimits",
    "WebApp",
    "ZooKeeperServer",
    "ZooKeeperTLS",
    "load_config",
    "parse_config",
    "provider_changes",
    "validate_config_file",
]
