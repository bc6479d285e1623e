"""The adapter of the `lazy` driver: it needs a cloud SDK that is not installed."""

import no_such_cloud_sdk  # noqa: F401

Adapter = None
