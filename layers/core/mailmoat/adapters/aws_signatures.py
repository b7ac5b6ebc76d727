"""S3SignatureMirror: the ClamAV databases in the signature bucket, each pinned by S3 version id.

Layout: `clamav/<file>` (daily.cld, main.cvd, bytecode.cvd …, and freshclam.dat, freshclam's
own state: its cool-down after a mirror said 429 and its id) plus `clamav/manifest.json`,
written last. The manifest names the version id of each file, so a scanner that reads it
while an update is being uploaded still gets one consistent set (the bucket is versioned;
old versions expire by lifecycle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

PREFIX = "clamav/"
MANIFEST = PREFIX + "manifest.json"
_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})


class S3SignatureMirror:
    def __init__(self, bucket: str, *, client: Any = None, sse: str = "AES256") -> None:
        if not bucket:
            raise ValueError("S3SignatureMirror needs the signature bucket name")
        self.bucket = bucket
        self.client = client if client is not None else boto3.client("s3")
        self.sse = sse

    def manifest(self) -> dict[str, Any] | None:
        """The published manifest, None before the first update."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=MANIFEST)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        data = json.loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise ValueError("the signature manifest is not a manifest")
        return data

    def put_manifest(self, manifest: dict[str, Any]) -> None:
        self.client.put_object(Bucket=self.bucket, Key=MANIFEST, ServerSideEncryption=self.sse,
                               Body=json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"),
                               ContentType="application/json")

    def upload(self, name: str, path: Path, *, sha256: str) -> str:
        """Store one file; returns its version id ("" on a bucket without versioning)."""
        with path.open("rb") as body:
            response = self.client.put_object(Bucket=self.bucket, Key=PREFIX + _plain(name), Body=body,
                                              ServerSideEncryption=self.sse, Metadata={"sha256": sha256})
        return str(response.get("VersionId") or "")

    def download(self, name: str, destination: Path, *, version_id: str = "") -> bool:
        """False when the object (or that version of it) is not there."""
        extra = {"VersionId": version_id} if version_id else None
        try:
            self.client.download_file(self.bucket, PREFIX + _plain(name), str(destination), ExtraArgs=extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True


def _plain(name: str) -> str:
    """A database file name, never a path: the manifest is ours, but is read back from S3."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise ValueError(f"not a signature file name: {name!r:.80}")
    return name
