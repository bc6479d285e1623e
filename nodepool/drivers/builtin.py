"""The plug-in objects of the drivers shipped with nodepool (setup.cfg's entry points name them).

Importing this module imports only the drivers' config modules: each Adapter
module (and its cloud SDK) is imported when a provider of that driver runs.
"""

from __future__ import annotations

from nodepool.config import aws, openstack, static
from nodepool.drivers.plugins import DriverPlugin

OPENSTACK = DriverPlugin(config=openstack.DRIVER,
                         adapter="nodepool.drivers.openstack:OpenStackAdapter")
STATIC = DriverPlugin(config=static.DRIVER, adapter="nodepool.drivers.static:StaticAdapter")
AWS = DriverPlugin(config=aws.DRIVER, adapter="nodepool.drivers.aws:AwsAdapter")
