"""The launcher's web endpoints: status endpoints, Prometheus, the status page."""
