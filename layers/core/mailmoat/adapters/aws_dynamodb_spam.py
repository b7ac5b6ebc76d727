"""DynamoSpamStore: the spam store port (spam/quarantine.py) on one DynamoDB table keyed by `pk`.

Items: `HELD#<message id>#<recipient>` (one held copy; `expires` is the table's TTL attribute,
so DynamoDB forgets it after the retention as S3's lifecycle forgets the blob) and
`ALLOW#<recipient>` (a string set of that recipient's allowed senders). The digest and list
views are bounded filtered scans: the table only holds spam copies within their retention.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr

from mailmoat.adapters.aws_dynamodb import _epoch, _table, _ts
from mailmoat.spam.quarantine import HELD, RELEASED, HeldMessage

MAX_SCAN_PAGES = 50


def _held_key(message_id: str, recipient: str) -> dict[str, str]:
    return {"pk": f"HELD#{message_id}#{recipient.lower()}"}


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


class DynamoSpamStore:
    def __init__(self, table_name: str = "", *, table: Any = None) -> None:
        self.table = _table(table, table_name)

    def save(self, held: HeldMessage) -> None:
        """The first record wins: a re-run must not forget a release or a digest."""
        from botocore.exceptions import ClientError

        item: dict[str, Any] = {
            **_held_key(held.message_id, held.recipient), "kind": "held",
            "message_id": held.message_id, "recipient": held.recipient.lower(),
            "tenant": held.tenant, "held_at": _ts(held.held_at), "expires_at": _ts(held.expires_at),
            "expires": _epoch(held.expires_at), "blob_key": held.blob_key,
            "sources": json.dumps(held.sources), "state": held.state}
        for name in ("mail_from", "from_header", "subject", "date"):
            value = getattr(held, name)
            if value:
                item[name] = value
        if held.score is not None:
            item["score"] = Decimal(str(held.score))
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def get(self, message_id: str, recipient: str) -> HeldMessage | None:
        item = self.table.get_item(Key=_held_key(message_id, recipient)).get("Item")
        return _held(item) if item else None

    def _scan(self, condition: Any) -> list[HeldMessage]:
        kwargs: dict[str, Any] = {"FilterExpression": condition}
        out: list[HeldMessage] = []
        for _ in range(MAX_SCAN_PAGES):
            page = self.table.scan(**kwargs)
            out.extend(_held(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(out, key=lambda h: (h.recipient, h.held_at))

    def held(self, *, tenant: str | None = None, recipient: str | None = None,
             now: datetime | None = None) -> list[HeldMessage]:
        condition = Attr("kind").eq("held") & Attr("state").eq(HELD)
        if tenant is not None:
            condition &= Attr("tenant").eq(tenant)
        if recipient is not None:
            condition &= Attr("recipient").eq(recipient.lower())
        if now is not None:
            condition &= Attr("expires_at").gt(_ts(now))
        return self._scan(condition)

    def pending_digest(self, now: datetime, tenant: str | None = None) -> list[HeldMessage]:
        condition = (Attr("kind").eq("held") & Attr("state").eq(HELD)
                     & Attr("digested_at").not_exists() & Attr("expires_at").gt(_ts(now)))
        if tenant is not None:
            condition &= Attr("tenant").eq(tenant)
        return self._scan(condition)

    def mark_digested(self, keys: list[tuple[str, str]], at: datetime) -> None:
        for message_id, recipient in keys:
            self.table.update_item(Key=_held_key(message_id, recipient),
                                   UpdateExpression="SET digested_at = :at",
                                   ConditionExpression="attribute_exists(pk)",
                                   ExpressionAttributeValues={":at": _ts(at)})

    def mark_released(self, message_id: str, recipient: str, at: datetime, by: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.table.update_item(
                Key=_held_key(message_id, recipient),
                UpdateExpression="SET #s = :released, released_at = :at, released_by = :by",
                ConditionExpression="#s = :held",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":released": RELEASED, ":held": HELD,
                                           ":at": _ts(at), ":by": by})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def expired(self, now: datetime) -> list[HeldMessage]:
        return self._scan(Attr("kind").eq("held") & Attr("expires_at").lte(_ts(now)))

    def delete(self, message_id: str, recipient: str) -> None:
        self.table.delete_item(Key=_held_key(message_id, recipient))

    def allow_sender(self, recipient: str, sender: str, at: datetime) -> None:
        self.table.update_item(Key={"pk": f"ALLOW#{recipient.lower()}"},
                               UpdateExpression="ADD senders :s SET kind = :k, updated_at = :at",
                               ExpressionAttributeValues={":s": {sender.strip().lower()},
                                                          ":k": "allow", ":at": _ts(at)})

    def allowed_senders(self, recipient: str) -> list[str]:
        item = self.table.get_item(Key={"pk": f"ALLOW#{recipient.lower()}"}).get("Item")
        return sorted(str(s) for s in (item or {}).get("senders", set()))


def _held(item: dict[str, Any]) -> HeldMessage:
    score = item.get("score")
    held_at = _dt(item["held_at"]) or datetime.now(UTC)
    expires_at = _dt(item["expires_at"]) or held_at
    return HeldMessage(
        message_id=str(item["message_id"]), recipient=str(item["recipient"]),
        tenant=str(item["tenant"]), held_at=held_at, expires_at=expires_at,
        blob_key=str(item["blob_key"]), mail_from=item.get("mail_from"),
        from_header=item.get("from_header"), subject=item.get("subject"), date=item.get("date"),
        score=float(score) if score is not None else None,
        sources=json.loads(item.get("sources") or "[]"), state=str(item.get("state", HELD)),
        digested_at=_dt(item.get("digested_at")), released_at=_dt(item.get("released_at")),
        released_by=item.get("released_by"))
