"""A local OpenStack cloud simulator (Keystone, Nova, Glance, Neutron) for openstacksdk over real HTTP."""

from .client import ControlClient, ControlError, wait_for
from .config import DEFAULT_PORT, FlavorSpec, Quotas, SimConfig, Timings
from .server import Simulator

__all__ = ["ControlClient", "ControlError", "DEFAULT_PORT", "FlavorSpec", "Quotas", "SimConfig", "Simulator",
           "Timings", "wait_for"]
