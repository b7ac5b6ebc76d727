"""Antivirus verdicts by content hash on the isolated-files table ("AVSCAN#<sha256>" rows, gone
by TTL like the table's other rows), and scan requests: the bytes to the quarantine bucket under
isolated/avscan/<sha256>, {"avscan": "<sha256>"} to the AvScan function's queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from mailmoat.adapters.aws_dynamodb import _DAY, _epoch, _table, _ts
from mailmoat.ports import AntivirusVerdict, BlobStore
from mailmoat.services.rescan import avscan_key

_OUTCOMES = ("clean", "infected", "failed")


class DynamoAntivirusVerdicts:
    """The AntivirusVerdicts port: PutItem (AvScan function), GetItem (portal)."""

    def __init__(self, table_name: str = "", *, retention_days: int = 30, table: Any = None) -> None:
        self.table = _table(table, table_name)
        self.retention = timedelta(days=retention_days)

    def get(self, sha256: str) -> AntivirusVerdict | None:
        item = self.table.get_item(Key={"token": f"AVSCAN#{sha256}"}).get("Item")
        if not item or item.get("outcome") not in _OUTCOMES:
            return None
        if int(item.get("expires_at", 0)) <= _epoch(datetime.now(UTC)):
            return None  # TTL deletion lags by up to days; expiry is checked here
        signature = item.get("signature")
        return AntivirusVerdict(outcome=item["outcome"], at=datetime.fromisoformat(str(item["at"])),
                                signature=str(signature) if signature else None,
                                detail=str(item.get("detail", "")),
                                engine=str(item.get("engine", "clamd")))

    def put(self, sha256: str, verdict: AntivirusVerdict) -> None:
        item: dict[str, Any] = {
            "token": f"AVSCAN#{sha256}", "outcome": verdict.outcome, "at": _ts(verdict.at),
            "engine": verdict.engine, "detail": verdict.detail[:300],
            "expires_at": _epoch(verdict.at) + int(self.retention.total_seconds() or _DAY)}
        if verdict.signature:
            item["signature"] = verdict.signature[:300]
        self.table.put_item(Item=item)


class SqsAntivirusRequests:
    """The AntivirusRequests port: the bytes first (the function reads them), then the message.
    A repeated request is harmless: the function scans what is there, or finds nothing left."""

    def __init__(self, blobs: BlobStore, queue_url: str, *, client: Any = None) -> None:
        if not queue_url:
            raise ValueError("an AvScan queue URL is required")
        self.blobs = blobs
        self.queue_url = queue_url
        self.client = client if client is not None else boto3.client("sqs")

    def request(self, sha256: str, data: bytes) -> None:
        self.blobs.put(avscan_key(sha256), data)
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps({"avscan": sha256}))
