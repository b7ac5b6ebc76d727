"""DynamoKeepMailStore: the keep-mail store port (keepmail.py) on one DynamoDB table (`pk`, `sk`).

Items:
- `KEEP#<recipient>` / `MSG#<message id>`: one kept copy's index row (the copy itself is the
  blob `keep/<recipient>/<id>`); `expires` (the table's TTL) is a week after `kept_until`, so
  the sweep, which deletes blob and row together, normally gets there first.
- `USER#<address>` / `USER`: the argon2 password hash and the alternate address;
  `USER#<address>` / `CODE`: the pending one-time code (hash, expiry, attempts);
  `USER#<address>` / `FAIL#<time>#<random>`: one failed sign-in (TTL a day later).
- `SESSION#<sha256 of the token>` / `SESSION`: a signed-in browser (TTL at its expiry).

Expiry is always checked on read (`session()`, the code's own `expires_at`, the failure
window): DynamoDB's TTL deletes lazily, so it only keeps the table small. Hashes only, as in
the SQLite store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from boto3.dynamodb.conditions import Attr, Key

from mailmoat.adapters.aws_dynamodb import _epoch, _table, _ts
from mailmoat.keepmail import KeptMessage, OneTimeCode

MAX_PAGES = 50  # a recipient's copies within the keep period; a scan of expired rows
_ROW_GRACE = timedelta(days=7)
_FAILURE_TTL = timedelta(days=1)


def _copy_key(message_id: str, recipient: str) -> dict[str, str]:
    return {"pk": f"KEEP#{recipient}", "sk": f"MSG#{message_id}"}


def _user(address: str, sk: str) -> dict[str, str]:
    return {"pk": f"USER#{address}", "sk": sk}


def _session_key(token_sha256: str) -> dict[str, str]:
    return {"pk": f"SESSION#{token_sha256}", "sk": "SESSION"}


class DynamoKeepMailStore:
    def __init__(self, table_name: str = "", *, table: Any = None) -> None:
        self.table = _table(table, table_name)

    # --- kept copies ---------------------------------------------------------------------------
    def put(self, kept: KeptMessage) -> None:
        item: dict[str, Any] = {
            **_copy_key(kept.message_id, kept.recipient), "message_id": kept.message_id,
            "recipient": kept.recipient, "tenant": kept.tenant, "received_at": _ts(kept.received_at),
            "outcome": kept.outcome, "blob_key": kept.blob_key, "kept_until": _ts(kept.kept_until),
            "expires": _epoch(kept.kept_until + _ROW_GRACE)}
        for name in ("from_header", "subject"):
            value = getattr(kept, name)
            if value is not None:
                item[name] = value
        self.table.put_item(Item=item)

    def get(self, message_id: str, recipient: str) -> KeptMessage | None:
        item = self.table.get_item(Key=_copy_key(message_id, recipient)).get("Item")
        return _kept(item) if item else None

    def messages(self, recipient: str, since: datetime, limit: int = 500) -> list[KeptMessage]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"KEEP#{recipient}") & Key("sk").begins_with("MSG#"),
            "FilterExpression": Attr("received_at").gte(_ts(since))}
        found: list[KeptMessage] = []
        for _ in range(MAX_PAGES):
            page = self.table.query(**kwargs)
            found.extend(_kept(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        found.sort(key=lambda k: k.received_at, reverse=True)
        return found[:max(0, limit)]

    def expired(self, now: datetime) -> list[KeptMessage]:
        kwargs: dict[str, Any] = {
            "FilterExpression": Attr("pk").begins_with("KEEP#") & Attr("kept_until").lte(_ts(now))}
        found: list[KeptMessage] = []
        for _ in range(MAX_PAGES):
            page = self.table.scan(**kwargs)
            found.extend(_kept(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found

    def delete(self, message_id: str, recipient: str) -> None:
        self.table.delete_item(Key=_copy_key(message_id, recipient))

    # --- credentials ---------------------------------------------------------------------------
    def _set_user(self, address: str, name: str, value: str | None) -> None:
        if value is None:
            self.table.update_item(Key=_user(address, "USER"), UpdateExpression="REMOVE #n",
                                   ExpressionAttributeNames={"#n": name})
        else:
            self.table.update_item(Key=_user(address, "USER"), UpdateExpression="SET #n = :v",
                                   ExpressionAttributeNames={"#n": name},
                                   ExpressionAttributeValues={":v": value})

    def _get_user(self, address: str, name: str) -> str | None:
        item = self.table.get_item(Key=_user(address, "USER")).get("Item") or {}
        value = item.get(name)
        return str(value) if value is not None else None

    def set_password(self, address: str, password_hash: str | None) -> None:
        self._set_user(address, "password_hash", password_hash)

    def password_hash(self, address: str) -> str | None:
        return self._get_user(address, "password_hash")

    def set_alternate(self, address: str, alternate: str | None) -> None:
        self._set_user(address, "alternate", alternate)

    def alternate(self, address: str) -> str | None:
        return self._get_user(address, "alternate")

    # --- one-time codes ------------------------------------------------------------------------
    def set_code(self, address: str, code: OneTimeCode | None) -> None:
        if code is None:
            self.table.delete_item(Key=_user(address, "CODE"))
            return
        self.table.put_item(Item={**_user(address, "CODE"), "code_hash": code.code_sha,
                                  "expires_at": _ts(code.expires_at), "attempts": code.attempts,
                                  "created_at": _ts(code.created_at), "expires": _epoch(code.expires_at)})

    def code(self, address: str) -> OneTimeCode | None:
        item = self.table.get_item(Key=_user(address, "CODE")).get("Item")
        if not item:
            return None
        return OneTimeCode(str(item["code_hash"]), datetime.fromisoformat(str(item["expires_at"])),
                           int(item.get("attempts", 0)), datetime.fromisoformat(str(item["created_at"])))

    def count_code_attempt(self, address: str) -> None:
        from botocore.exceptions import ClientError

        try:  # atomic: two wrong guesses at once both count
            self.table.update_item(Key=_user(address, "CODE"), UpdateExpression="ADD attempts :one",
                                   ConditionExpression="attribute_exists(pk)",
                                   ExpressionAttributeValues={":one": 1})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    # --- sessions ------------------------------------------------------------------------------
    def add_session(self, token_sha256: str, address: str, expires_at: datetime) -> None:
        self.table.put_item(Item={**_session_key(token_sha256), "address": address,
                                  "expires_at": _ts(expires_at), "expires": _epoch(expires_at)})

    def session(self, token_sha256: str, now: datetime) -> str | None:
        item = self.table.get_item(Key=_session_key(token_sha256)).get("Item")
        if not item or str(item.get("expires_at", "")) <= _ts(now):
            return None
        return str(item["address"])

    def end_session(self, token_sha256: str) -> None:
        self.table.delete_item(Key=_session_key(token_sha256))

    def purge(self, now: datetime) -> None:
        """Nothing to do: sessions, codes and failures carry TTLs and are checked on read."""


def _kept(item: dict[str, Any]) -> KeptMessage:
    def optional(name: str) -> str | None:
        value = item.get(name)
        return str(value) if value is not None else None

    return KeptMessage(
        message_id=str(item["message_id"]), recipient=str(item["recipient"]), tenant=str(item["tenant"]),
        received_at=datetime.fromisoformat(str(item["received_at"])), from_header=optional("from_header"),
        subject=optional("subject"), outcome=str(item["outcome"]), blob_key=str(item["blob_key"]),
        kept_until=datetime.fromisoformat(str(item["kept_until"])))
