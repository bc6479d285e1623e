"""The AWS driver: EC2 instances and volumes through boto3 (doc/aws.md)."""

from nodepool.drivers.aws.adapter import AwsAdapter

__all__ = ["AwsAdapter"]
