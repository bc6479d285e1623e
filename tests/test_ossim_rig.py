"""The OpenStack test rig itself (tests/plugins/ossim.py): adapters from YAML, the hung-delete fault."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from ossim import ControlClient, wait_for
from plugins.ossim import CLOUD, SimFaults

# openstacksdk warns about its own internals (deprecated helpers it still calls).
pytestmark = [pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
              pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")]


def test_the_rig_builds_openstack_adapters_from_yaml(make_adapter: Callable) -> None:
    adapter = make_adapter()
    assert adapter.provider.cloud == CLOUD and adapter.provider.rate == 0
    assert set(adapter.provider.pools) == {"main", "dressed"}


def test_hung_delete_fault_is_released_after_the_hang_ticks(ctl: ControlClient, conn: Any) -> None:
    faults = SimFaults(ctl, conn, "sim-fip", hang_ticks=2)
    server_id = faults.create_untagged_server()
    faults.hang_next_delete()
    conn.compute.delete_server(server_id)
    for _ in range(2):
        faults.tick()
    assert ctl.server(server_id)["deleting"]
    faults.tick()
    wait_for(lambda: ctl.server(server_id) is None, what="the released server to go")
