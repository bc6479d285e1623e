"""Helpers for tests and benchmarks: an openstacksdk connection to a simulator, and status polling."""

from __future__ import annotations

import os
import threading
from typing import Any

from .client import wait_for
from .server import Simulator

_env_lock = threading.Lock()  # OS_CLIENT_CONFIG_FILE is process-wide; connect one at a time


def connect(sim: Simulator, directory: str, cloud_name: str = "local", **cloud_extra: Any) -> Any:
    """openstack.connect() through a clouds.yaml written into `directory`, as an operator would."""
    import openstack

    path = sim.write_clouds_yaml(os.path.join(directory, "clouds.yaml"), cloud_name, **cloud_extra)
    with _env_lock:
        old = os.environ.get("OS_CLIENT_CONFIG_FILE")
        os.environ["OS_CLIENT_CONFIG_FILE"] = path
        try:
            return openstack.connect(cloud=cloud_name)
        finally:
            if old is None:
                os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
            else:
                os.environ["OS_CLIENT_CONFIG_FILE"] = old


def wait_for_status(conn: Any, server_id: str, statuses: tuple[str, ...] = ("ACTIVE", "ERROR"),
                    timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll conn.compute.get_server until its status is one of `statuses` (instead of wait_for_server)."""
    def ready() -> Any:
        server = conn.compute.get_server(server_id)
        return server if server.status in statuses else None
    return wait_for(ready, timeout, interval, f"server {server_id} to reach {'/'.join(statuses)}")


def wait_for_gone(conn: Any, server_id: str, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll until GET /servers/{id} answers 404."""
    from openstack import exceptions

    def gone() -> bool:
        try:
            conn.compute.get_server(server_id)
        except exceptions.NotFoundException:
            return True
        return False
    wait_for(gone, timeout, interval, f"server {server_id} to be gone (404)")
