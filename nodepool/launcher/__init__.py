"""The launcher daemon: request handling, providers, lifecycle, maintenance."""
