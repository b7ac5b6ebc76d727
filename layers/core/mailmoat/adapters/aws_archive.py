"""The archive of originals on S3 (AWS): write-once puts into the Object Lock bucket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from mailmoat.adapters.aws_s3 import S3BlobStore
from mailmoat.archive import checked_key


class S3ArchiveStore:
    """The archive bucket on AWS. `If-None-Match: *` makes S3 itself refuse a second write of
    the same key (concurrent Lambda copies included); the bucket's default Object Lock
    retention (template) keeps every version from deletion until it expires."""

    _EXISTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})

    def __init__(self, bucket: str, *, client: Any = None, sse: str = "AES256") -> None:
        if not bucket:
            raise ValueError("S3ArchiveStore needs a bucket name")
        self.bucket = bucket
        self.sse = sse
        self._blobs = S3BlobStore(bucket, client=client, sse=sse)
        self.client = self._blobs.client

    def put_once(self, key: str, data: bytes) -> bool:
        try:
            # Object Lock buckets require an integrity checksum on PUT; SHA-256 is also what an
            # auditor compares with.
            self.client.put_object(Bucket=self.bucket, Key=checked_key(key), Body=data,
                                   ServerSideEncryption=self.sse, IfNoneMatch="*",
                                   ChecksumAlgorithm="SHA256", ContentType="message/rfc822")
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in self._EXISTS:
                return False
            raise
        return True

    def get(self, key: str) -> bytes:
        return self._blobs.get(key)

    def exists(self, key: str) -> bool:
        return self._blobs.exists(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return self._blobs.keys(prefix)
