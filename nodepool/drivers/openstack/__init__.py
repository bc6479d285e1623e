"""The OpenStack driver: servers, floating IPs and leaks through openstacksdk (doc/openstack.md)."""

from nodepool.drivers.openstack.adapter import OpenStackAdapter

__all__ = ["OpenStackAdapter"]
