"""The OpenStack driver: servers, floating IPs and leak cleanup through openstacksdk (see doc/openstack.md)."""

from nodepool.drivers.openstack.adapter import OpenStackAdapter

__all__ = ["OpenStackAdapter"]
