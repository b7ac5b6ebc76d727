"""Secrets Manager: keys written once per cold start to private /tmp files, and named secrets."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

_written: dict[str, Path] = {}


def arc_key_file(secret_arn: str, *, client: Any = None, directory: Path | None = None) -> Path:
    """The ARC key as a 0600 file (the sealer reads Settings.arc_key_file); the secret's value
    is a PEM string (SecretString) or bytes (SecretBinary)."""
    def pem(value: bytes) -> None:
        if b"PRIVATE KEY-----" not in value:
            raise ValueError("the ARC key secret does not hold a PEM private key")

    return secret_file(secret_arn, "mailmoat-arc-", ".pem", pem, client=client, directory=directory)


def key_file(secret_arn: str, *, client: Any = None, directory: Path | None = None) -> Path:
    """A signing key kept as a secret string of 32 or more characters (the spam digest's link
    key), as a 0600 file for the setting that names a key file."""
    def long_enough(value: bytes) -> None:
        if len(value.strip()) < 32:
            raise ValueError("the key secret is shorter than 32 characters")

    return secret_file(secret_arn, "mailmoat-key-", ".txt", long_enough, client=client,
                       directory=directory)


def secret_file(secret_arn: str, prefix: str, suffix: str, check: Callable[[bytes], None], *,
                client: Any = None, directory: Path | None = None) -> Path:
    """A secret's value as a private file, fetched at most once per process (cold start)."""
    cached = _written.get(secret_arn)
    if cached is not None and cached.exists():
        return cached
    client = client if client is not None else boto3.client("secretsmanager")
    response = client.get_secret_value(SecretId=secret_arn)
    value = response.get("SecretBinary") or str(response.get("SecretString", "")).encode("utf-8")
    check(value)
    directory = directory or Path(tempfile.gettempdir())
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, value)
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
