"""S3BlobStore: the blob store port on S3 (SSE on every write, presigned GETs for big downloads)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlobStore:
    """Keys map to one bucket, except where `routes` sends a key prefix to another bucket: on
    AWS `isolated/` goes to the quarantine bucket, so our own writes never land under `raw/`
    of the bucket whose notifications start the pipeline."""

    def __init__(self, bucket: str, *, routes: Mapping[str, str] | None = None,
                 client: Any = None, sse: str = "AES256") -> None:
        if not bucket:
            raise ValueError("S3BlobStore needs a bucket name")
        self.bucket = bucket
        self.routes = dict(routes or {})
        # SigV4 presigned URLs (X-Amz-Expires), which every region accepts.
        self.client = client if client is not None else boto3.client(
            "s3", config=Config(signature_version="s3v4"))
        self.sse = sse

    def bucket_for(self, key: str) -> str:
        for prefix, bucket in self.routes.items():
            if key.startswith(prefix):
                return bucket
        return self.bucket

    @staticmethod
    def _check(key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in (".", "..") for p in parts) or "\x00" in key:
            raise ValueError(f"bad blob key: {key!r}")
        return key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket_for(key), Key=self._check(key), Body=data,
                               ServerSideEncryption=self.sse)

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket_for(key), Key=self._check(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(key) from exc  # what the local store raises, too
            raise
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket_for(key), Key=self._check(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket_for(key), Key=self._check(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_for(prefix), Prefix=prefix):
            for item in page.get("Contents", []):
                yield str(item["Key"])

    def objects(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """(key, last modified) under a prefix: the reconciler's view of what is stored."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_for(prefix), Prefix=prefix):
            for item in page.get("Contents", []):
                yield str(item["Key"]), item["LastModified"]

    def presigned_get(self, key: str, *, expires_in: int = 300, filename: str | None = None) -> str:
        """A short-lived download URL, so large files never pass through a Lambda response."""
        params: dict[str, str] = {"Bucket": self.bucket_for(key), "Key": self._check(key)}
        if filename:
            from urllib.parse import quote

            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
            params["ResponseContentType"] = "application/octet-stream"
        url: str = self.client.generate_presigned_url("get_object", Params=params,
                                                      ExpiresIn=expires_in)
        return url
