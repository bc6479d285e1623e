"""Every ZooKeeper path of the protocol (and of ours), built in this one module."""

ROOT = "/nodepool"
REQUESTS = f"{ROOT}/requests"
REQUEST_LOCKS = f"{ROOT}/requests-lock"
NODES = f"{ROOT}/nodes"
COMPONENTS = f"{ROOT}/components"
IMAGES = f"{ROOT}/images"
# Ours, ignored by other clients: provider leases (one owner per provider).
LAUNCHER_PRIVATE = f"{ROOT}/launcher"
PROVIDER_LEASES = f"{LAUNCHER_PRIVATE}/provider-lease"
# Ours: per-request timelines, outside the request znode (doc/internals.md, "Request timelines").
REQUEST_TIMELINES = f"{ROOT}/request-timeline"

LOCK_NODE_NAME = "lock"


def request(request_id: str) -> str:
    return f"{REQUESTS}/{request_id}"


def request_prefix(priority: int) -> str:
    """The sequential-create prefix for a request of `priority` (e.g. `200-`)."""
    if not 0 <= priority <= 999:
        raise ValueError(f"request priority must be 0..999, got {priority}")
    return f"{REQUESTS}/{priority:03d}-"


def request_lock(request_id: str) -> str:
    return f"{REQUEST_LOCKS}/{request_id}"


def request_timeline(request_id: str) -> str:
    return f"{REQUEST_TIMELINES}/{request_id}"


def request_timeline_entry(request_id: str, writer: str) -> str:
    """One writer's timeline of a request: a provider's, or `@<hostname>` (a launcher's)."""
    return f"{REQUEST_TIMELINES}/{request_id}/{writer}"


def node(node_id: str) -> str:
    return f"{NODES}/{node_id}"


def node_lock(node_id: str) -> str:
    return f"{NODES}/{node_id}/{LOCK_NODE_NAME}"


def node_create_prefix() -> str:
    """Nodes are created sequentially under this prefix: ids are the 10-digit sequence."""
    return f"{NODES}/"


def components(kind: str) -> str:
    return f"{COMPONENTS}/{kind}"


def component_prefix(kind: str, hostname: str) -> str:
    return f"{COMPONENTS}/{kind}/{hostname}"


def provider_lease(provider: str) -> str:
    return f"{PROVIDER_LEASES}/{provider}"


def image(name: str) -> str:
    return f"{IMAGES}/{name}"


def image_builds(name: str) -> str:
    return f"{IMAGES}/{name}/builds"


def image_uploads(name: str, build_id: str, provider: str) -> str:
    return f"{IMAGES}/{name}/builds/{build_id}/providers/{provider}/images"


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]
