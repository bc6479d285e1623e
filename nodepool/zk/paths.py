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


def image_build(name: str, build_id: str) -> str:
    return f"{IMAGES}/{name}/builds/{build_id}"


def image_providers(name: str, build_id: str) -> str:
    return f"{IMAGES}/{name}/builds/{build_id}/providers"


def image_uploads(name: str, build_id: str, provider: str) -> str:
    return f"{IMAGES}/{name}/builds/{build_id}/providers/{provider}/images"


def image_upload(name: str, build_id: str, provider: str, upload_id: str) -> str:
    return f"{image_uploads(name, build_id, provider)}/{upload_id}"


# Nodepool's flags and locks of an image (its zk/zookeeper.py), so that its builder and
# ours exclude each other: the znode `lock` sits beside the builds and uploads it guards.
def image_pause(name: str) -> str:
    """Exists = builds of the image are paused (`nodepool image-pause`)."""
    return f"{IMAGES}/{name}/pause"


def image_build_request(name: str) -> str:
    """Exists = a build was asked for (`nodepool image-build`)."""
    return f"{IMAGES}/{name}/request-build"


def image_build_lock(name: str) -> str:
    """Held while a build of the image runs: one build per image at a time."""
    return f"{image_builds(name)}/{LOCK_NODE_NAME}"


def image_build_id_lock(name: str, build_id: str) -> str:
    """Held while one build is deleted (cleanup)."""
    return f"{image_build(name, build_id)}/{LOCK_NODE_NAME}"


def image_upload_lock(name: str, build_id: str, provider: str) -> str:
    """Held while a build is uploaded to a provider: one upload per build and provider."""
    return f"{image_uploads(name, build_id, provider)}/{LOCK_NODE_NAME}"


def image_upload_number_lock(name: str, build_id: str, provider: str, upload_id: str) -> str:
    """Held while one upload is deleted (cleanup, `image-delete`'s rotation)."""
    return f"{image_upload(name, build_id, provider, upload_id)}/{LOCK_NODE_NAME}"


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]
