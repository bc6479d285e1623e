"""The kazoo internals nodepool/zk/kazooext relies on are all there in the installed kazoo."""

import importlib

from kazoo.client import KazooClient
from kazoo.handlers.threading import SequentialThreadingHandler

from nodepool.zk.kazooext import PRIVATE_NAMES
from nodepool.zk.kazooext.client import NodepoolKazooClient
from nodepool.zk.kazooext.connection import BatchingConnection
from nodepool.zk.kazooext.handler import Inline, PollHandler


def _resolves(name: str, instances: dict) -> bool:
    """Is the qualified `name` a module attribute, or a class's attribute or an
    attribute its __init__ sets (looked up on a plain kazoo instance)?"""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:-1]:
            obj = getattr(obj, part, None)
        if obj is None:
            return False
        last = parts[-1]
        if hasattr(obj, last):
            return True
        instance = instances.get(obj)
        return instance is not None and hasattr(instance, last)
    return False


def test_every_private_kazoo_name_relied_on_exists():
    client = KazooClient()       # never started: only builds its objects
    instances = {
        KazooClient: client,
        type(client._connection): client._connection,
        SequentialThreadingHandler: SequentialThreadingHandler(),
    }
    missing = [name for name in PRIVATE_NAMES if not _resolves(name, instances)]
    assert missing == [], f"kazoo upgrade removed names nodepool/zk/kazooext relies on: {missing}"


def test_private_names_are_qualified_kazoo_names():
    assert PRIVATE_NAMES and len(set(PRIVATE_NAMES)) == len(PRIVATE_NAMES)
    for name in PRIVATE_NAMES:
        assert name.startswith("kazoo.") and name.rsplit(".", 1)[1].startswith("_"), name


def test_the_client_uses_the_extensions():
    client = NodepoolKazooClient(hosts="127.0.0.1:1")
    assert isinstance(client._connection, BatchingConnection)
    assert isinstance(client.handler, PollHandler)
    client.add_persistent_route("/a", print)
    route = client.persistent_routes["/a"]
    assert isinstance(route, Inline) and route.func is print   # run on the reader thread
    client.remove_persistent_route("/a")
    assert client.persistent_routes == {}
    chrooted = NodepoolKazooClient(hosts="127.0.0.1:1/root")
    chrooted.add_persistent_route("/a", print)
    assert list(chrooted.persistent_routes) == ["/root/a"]
