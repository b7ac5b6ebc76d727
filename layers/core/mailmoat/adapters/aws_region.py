"""The AWS region a command-line run is in: the environment's, else the SDK's configuration
(~/.aws/config profile), else us-east-1. Lambda always sets AWS_REGION."""

from __future__ import annotations

import os


def current_region() -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    import boto3

    return boto3.session.Session().region_name or "us-east-1"
