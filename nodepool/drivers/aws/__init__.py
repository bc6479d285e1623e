"""The AWS driver: EC2 instances and volumes through boto3 (doc/aws.md)."""

from typing import Any

__all__ = ["AwsAdapter"]


def __getattr__(name: str) -> Any:
    # Lazy: the config imports nodepool.drivers.aws.codes without loading boto3.
    if name == "AwsAdapter":
        from nodepool.drivers.aws.adapter import AwsAdapter
        return AwsAdapter
    raise AttributeError(name)
