"""The admin audit trail on AWS: rows in the directory table, one partition per tenant, with TTL."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from mailmoat.admin.audit import AuditEntry

AUDIT_TTL_DAYS = 400  # a year of trail and some margin for the yearly review


class DynamoAuditLog:
    """pk "AUDIT#<tenant>", sk "<UTC timestamp>#<random>": a Query per tenant, newest first.
    The portal role needs PutItem and Query on the directory table for this."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def record(self, entry: AuditEntry) -> None:
        at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)
        stamp = at.astimezone(UTC).isoformat(timespec="milliseconds")
        item = {"pk": f"AUDIT#{entry.tenant}", "sk": f"{stamp}#{secrets.token_hex(4)}",
                "admin": entry.admin, "action": entry.action, "target": entry.target[:500],
                "detail": entry.detail[:1000], "expires_at": int(time.time()) + AUDIT_TTL_DAYS * 86_400}
        if entry.client_ip:
            item["client_ip"] = entry.client_ip
        self.table.put_item(Item=item)

    def entries(self, tenant: str | None, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
        if tenant is None:
            return []  # no cross-tenant scan: an operator reads one tenant at a time
        from boto3.dynamodb.conditions import Key

        wanted = max(0, min(limit, 1000)) + max(0, offset)
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(f"AUDIT#{tenant}"),
                                  "ScanIndexForward": False}
        while len(items) < wanted:
            page = self.table.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [AuditEntry(at=datetime.fromisoformat(str(i["sk"]).rsplit("#", 1)[0]),
                           admin=str(i.get("admin", "")), tenant=tenant, action=str(i.get("action", "")),
                           target=str(i.get("target", "")), client_ip=i.get("client_ip"),
                           detail=str(i.get("detail", "")))
                for i in items[offset:wanted]]


class DynamoAdminSessions:
    """Sign-out on AWS, where admins have no account row: item "ADMIN#<email>" / "SESSIONS"
    holds the time (epoch ms) up to which that admin's console sessions are void, so a copied
    cookie dies with the sign-out as it does locally. Only ever moves forward (a conditional
    PutItem: the portal role may put and get on the directory table, not update)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def end_sessions(self, email: str, at_ms: int) -> None:
        from botocore.exceptions import ClientError

        try:
            self.table.put_item(Item={"pk": f"ADMIN#{email}", "sk": "SESSIONS", "after_ms": at_ms},
                                ConditionExpression="attribute_not_exists(pk) OR after_ms < :t",
                                ExpressionAttributeValues={":t": at_ms})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def sessions_after(self, email: str) -> int:
        item = self.table.get_item(Key={"pk": f"ADMIN#{email}", "sk": "SESSIONS"}).get("Item") or {}
        return int(item.get("after_ms", 0))
