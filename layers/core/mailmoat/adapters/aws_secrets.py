"""The ARC signing key from Secrets Manager, written once per cold start to a private /tmp file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import boto3

_written: dict[str, Path] = {}


def arc_key_file(secret_arn: str, *, client: Any = None, directory: Path | None = None) -> Path:
    """The key as a 0600 file (the sealer reads Settings.arc_key_file). Fetched at most once
    per process; the secret's value is a PEM string (SecretString) or bytes (SecretBinary)."""
    cached = _written.get(secret_arn)
    if cached is not None and cached.exists():
        return cached
    client = client if client is not None else boto3.client("secretsmanager")
    response = client.get_secret_value(SecretId=secret_arn)
    pem = response.get("SecretBinary") or str(response.get("SecretString", "")).encode("ascii")
    if b"PRIVATE KEY-----" not in pem:
        raise ValueError("the ARC key secret does not hold a PEM private key")
    directory = directory or Path(tempfile.gettempdir())
    fd, name = tempfile.mkstemp(prefix="mailmoat-arc-", suffix=".pem", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
    finally:
        os.close(fd)
    path = Path(name)
    _written[secret_arn] = path
    return path


def secret_string(secret_id: str, *, client: Any = None) -> str | None:
    """One secret's SecretString (None for a binary secret). Callers cache it per process."""
    client = client if client is not None else boto3.client("secretsmanager")
    value = client.get_secret_value(SecretId=secret_id).get("SecretString")
    return str(value) if value is not None else None


class SecretReader:
    """Named secrets under one prefix (`<stack>/directory/<name>`), read once per process: where
    the local runtime reads an environment variable of that name, the AWS one reads this."""

    def __init__(self, prefix: str, *, client: Any = None) -> None:
        self.prefix = prefix
        self.client = client if client is not None else boto3.client("secretsmanager")
        self._cache: dict[str, str | None] = {}

    def get(self, name: str) -> str | None:
        """The secret's string, None when there is no such secret (the caller says what is missing)."""
        if name not in self._cache:
            from botocore.exceptions import ClientError

            try:
                response = self.client.get_secret_value(SecretId=self.prefix + name)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                self._cache[name] = None
            else:
                value = response.get("SecretString")
                self._cache[name] = str(value) if value is not None else None
        return self._cache[name]
