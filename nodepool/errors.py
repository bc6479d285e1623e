"""The error taxonomy: what the core dispatches on, never on message text."""


class NodepoolError(Exception):
    """Base class of every error this package raises on purpose."""


class ProtocolError(NodepoolError):
    """Data in ZooKeeper does not follow PROTOCOL.md (bad JSON, unknown state)."""


class InvalidTransition(NodepoolError):
    """A writer tried a state change that the state's transition table forbids."""


class ZooKeeperUnavailable(NodepoolError):
    """ZooKeeper could not be reached or the session is not connected."""


class NotFound(NodepoolError):
    """A node or request does not exist (or vanished while we worked on it)."""


class LockFailed(NodepoolError):
    """A lock is held by someone else."""


class VersionConflict(NodepoolError):
    """A version-checked write lost a race; re-read and decide again."""


# The driver edge (ARCHITECTURE.md section 8). Each driver maps its SDK's
# exceptions onto these once, from a table.

class DriverError(NodepoolError):
    """Base of the errors an adapter raises."""


class QuotaError(DriverError):
    """The cloud refused for quota: abort the node, pause the provider, no failure counted."""

    statsd_key = "error.quota"   # the launch result metrics report (Nodepool's name)


class CapacityError(DriverError):
    """The cloud has no capacity for this shape here now: try elsewhere for a while."""

    statsd_key = "error.capacity"


class TransientError(DriverError):
    """Retry the same step with backoff (rate limits, 5xx, timeouts).

    `retry_after` is the delay the cloud asked for, in seconds, when it said one.
    """

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class CostUnknown(DriverError):
    """A label's cost cannot be told yet without asking the cloud (its flavors are not read);
    the launcher waits for the next limits read instead of calling the cloud on its loop."""


class LaunchFailure(DriverError):
    """This attempt failed for good: clean up the server, retry up to launch-retries."""


class KeyscanFailure(LaunchFailure):
    """The node's ssh host keys could not be scanned."""

    statsd_key = "error.keyscan"


class ConfigurationError(DriverError):
    """The provider's configuration cannot work (unknown flavor, image): stop it, say why."""
