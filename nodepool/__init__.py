"""Nodepool-compatible launcher of single-use test nodes for CI systems."""

__version__ = "0.1.0"
