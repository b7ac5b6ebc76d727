"""DynamoDB message log (id): one row per message with TTL; `status` always, `state` only while
unfinished so the sparse `by-state` index holds just what the reconciler needs. Delivery claims
are rows "<id>#rcpt#<address>" created with a conditional put: at most one delivery per recipient."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from mailmoat.adapters.aws_dynamodb import _DAY, _conditional_failed, _plain, _table, _ts
from mailmoat.ports import MessageRecord, TraceQuery
from mailmoat.states import FINAL_STATES, MessageState

# --- message log ------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset({"received_at", "updated_at", "state", "mail_from", "rcpt_to", "client_ip",
                            "helo", "message_id", "subject", "tenant", "disposition", "size",
                            "attempts", "next_attempt_at", "timings", "report", "error",
                            "stage", "raw_key", "tls"})  # stage: the stage last begun (the reconciler's cue)
_JSON_FIELDS = frozenset({"rcpt_to", "timings", "report"})
_STALE_CLAIM_SECONDS = 900  # longer than any function timeout: the claimant is gone


class DynamoMessageLog:
    """The message log with TTL (`expires_at`, retention days after the last write)."""

    def __init__(self, table_name: str = "", *, table: Any = None, retention_days: int = 30) -> None:
        self.table = _table(table, table_name)
        self.ttl_seconds = max(1, retention_days) * _DAY
        self._claims: set[tuple[str, str]] = set()  # claims this process won and still holds

    def _expires(self) -> int:
        return int(time.time()) + self.ttl_seconds

    def accept(self, record: MessageRecord) -> None:
        """Create the row once; a re-delivered event finds it and leaves it alone."""
        item: dict[str, Any] = {
            "id": record.id, "received_at": _ts(record.received_at), "updated_at": _ts(datetime.now(UTC)),
            "status": str(record.state), "mail_from": record.mail_from, "rcpt_to": json.dumps(record.rcpt_to),
            "client_ip": record.client_ip, "helo": record.helo, "message_id": record.message_id,
            "subject": record.subject, "tenant": record.tenant, "size": record.size, "attempts": 0,
            "raw_key": record.raw_key, "tls": record.tls, "expires_at": self._expires()}
        if record.state not in FINAL_STATES:
            item["state"] = str(record.state)
        try:
            self.table.put_item(Item={k: v for k, v in item.items() if v is not None},
                                ConditionExpression="attribute_not_exists(id)")
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def update(self, record_id: str, /, **fields: Any) -> None:
        unknown = set(fields) - _RECORD_FIELDS
        if unknown:
            raise ValueError(f"unknown message log fields: {sorted(unknown)}")
        fields["updated_at"] = _ts(datetime.now(UTC))
        names: dict[str, str] = {"#exp": "expires_at"}
        values: dict[str, Any] = {":exp": self._expires()}
        sets = ["#exp = :exp"]
        removes: list[str] = []
        for i, (key, value) in enumerate(fields.items()):
            if key == "state":
                value = str(value)
                names["#status"], values[":status"] = "status", value
                sets.append("#status = :status")
                if value in FINAL_STATES:
                    names["#state"] = "state"
                    removes.append("#state")  # leaves the sparse by-state index
                    continue
            names[f"#f{i}"] = key
            if value is None:
                removes.append(f"#f{i}")
                continue
            if key == "report":
                value = _fitting_report(value)
            values[f":v{i}"] = json.dumps(value, ensure_ascii=False) if key in _JSON_FIELDS else value
            sets.append(f"#f{i} = :v{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        self.table.update_item(Key={"id": record_id}, UpdateExpression=expression,
                               ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def begin_attempt(self, record_id: str, stage: str) -> int:
        """One more attempt of `stage` (the count starts again at a new stage); returns it. The
        row goes to `processing` and into the by-state index the reconciler reads."""
        names = {"#stage": "stage", "#status": "status", "#state": "state", "#a": "attempts",
                 "#u": "updated_at"}
        values: dict[str, Any] = {":s": stage, ":p": "processing", ":one": 1,
                                  ":u": _ts(datetime.now(UTC))}
        try:
            response = self.table.update_item(
                Key={"id": record_id}, ConditionExpression="#stage = :s",
                UpdateExpression="SET #status = :p, #state = :p, #u = :u ADD #a :one",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW")
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            response = self.table.update_item(
                Key={"id": record_id},
                UpdateExpression="SET #stage = :s, #status = :p, #state = :p, #u = :u, #a = :one",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW")
        return int(response["Attributes"]["attempts"])

    def last_stage(self, message_id: str) -> str | None:
        item = self.table.get_item(Key={"id": message_id}).get("Item") or {}
        return str(item["stage"]) if item.get("stage") else None

    def get(self, message_id: str) -> MessageRecord | None:
        item = self.table.get_item(Key={"id": message_id}).get("Item")
        if not item or "#rcpt#" in message_id:
            return None
        return _record(item)

    def unfinished(self) -> list[MessageRecord]:
        from boto3.dynamodb.conditions import Key

        records: list[MessageRecord] = []
        for state in (s for s in MessageState if s not in FINAL_STATES):
            kwargs: dict[str, Any] = {"IndexName": "by-state",
                                      "KeyConditionExpression": Key("state").eq(state)}
            while True:
                page = self.table.query(**kwargs)
                for key in page.get("Items", []):
                    record = self.get(str(key["id"]))
                    if record is not None:
                        records.append(record)
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(records, key=lambda r: r.received_at)

    def recent(self, limit: int = 50) -> list[MessageRecord]:
        # An admin view; a scan is acceptable at this size, the pipeline never calls it.
        items = self.table.scan(Limit=max(limit * 4, 100)).get("Items", [])
        records = [_record(i) for i in items if "#rcpt#" not in str(i["id"])]
        return sorted(records, key=lambda r: r.received_at, reverse=True)[:limit]

    # A scan reads at most this many pages (1 MB each) per search: the trace is an admin view
    # over a TTL-bounded table, and a search must answer in an API Gateway request's time.
    SEARCH_MAX_PAGES = 20

    def search(self, query: TraceQuery) -> list[MessageRecord]:
        """The admin console's message trace: a bounded, filtered scan (no index serves free
        text), tenant/state/disposition filtered by DynamoDB, the rest in Python, newest first.
        Tables larger than SEARCH_MAX_PAGES pages are searched in their first pages only."""
        from boto3.dynamodb.conditions import Attr

        condition = Attr("received_at").exists()  # message rows only, never claim rows
        if query.tenant is not None:
            condition = condition & Attr("tenant").eq(query.tenant)
        if query.state:
            condition = condition & Attr("status").eq(query.state)
        if query.disposition:
            condition = condition & Attr("disposition").eq(query.disposition)
        if query.since is not None:
            condition = condition & Attr("received_at").gte(_ts(query.since))
        if query.until is not None:
            condition = condition & Attr("received_at").lt(_ts(query.until))
        kwargs: dict[str, Any] = {"FilterExpression": condition}
        found: list[MessageRecord] = []
        for _ in range(self.SEARCH_MAX_PAGES):
            page = self.table.scan(**kwargs)
            for item in page.get("Items", []):
                if "#rcpt#" in str(item["id"]):
                    continue
                record = _record(item)
                if _trace_matches(record, query):
                    found.append(record)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        found.sort(key=lambda r: (r.received_at, r.id), reverse=True)
        start = max(0, query.offset)
        return found[start:start + max(0, min(query.limit, 1000))]

    # The dashboard reads at most this many scan pages (1 MB each): the table has no index by
    # time for finished messages (by-state is sparse, unfinished rows only), and a console
    # request must answer in API Gateway's time. Beyond it the numbers cover the pages read.
    WINDOW_MAX_PAGES = 20

    def received_between(self, tenant: str | None, since: datetime, until: datetime,
                         limit: int) -> list[MessageRecord]:
        """The dashboard's window: a filtered scan bounded by WINDOW_MAX_PAGES and `limit`."""
        from boto3.dynamodb.conditions import Attr

        condition = Attr("received_at").gte(_ts(since)) & Attr("received_at").lt(_ts(until))
        if tenant is not None:
            condition = condition & Attr("tenant").eq(tenant)
        kwargs: dict[str, Any] = {"FilterExpression": condition}
        found: list[MessageRecord] = []
        for _ in range(self.WINDOW_MAX_PAGES):
            page = self.table.scan(**kwargs)
            found.extend(_record(i) for i in page.get("Items", []) if "#rcpt#" not in str(i["id"]))
            if "LastEvaluatedKey" not in page or len(found) >= limit:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        found.sort(key=lambda r: (r.received_at, r.id), reverse=True)
        return found[:max(0, limit)]

    # --- delivery claims: at most one delivery per (message, recipient) ---
    @staticmethod
    def _claim_id(message_id: str, recipient: str) -> str:
        return f"{message_id}#rcpt#{recipient.lower()}"

    def claim_delivery(self, message_id: str, recipient: str) -> bool:
        try:
            self.table.put_item(
                Item={"id": self._claim_id(message_id, recipient), "claimed_at": int(time.time()),
                      "expires_at": self._expires()},
                # A released claim (the host refused, nothing was sent) may be won again.
                ConditionExpression="attribute_not_exists(id) OR released = :t",
                ExpressionAttributeValues={":t": True})
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            # Held only by the attempt that just won it: an earlier attempt of this warm
            # process that ended without an outcome does not count.
            self._claims.discard((message_id, recipient.lower()))
            return False
        self._claims.add((message_id, recipient.lower()))
        return True

    def holds_claim(self, message_id: str, recipient: str) -> bool:
        return (message_id, recipient.lower()) in self._claims

    def release_delivery(self, message_id: str, recipient: str) -> None:
        """Give a claim back after a delivery that certainly did not happen (a refusal the
        mail host answered), so that the retry may try again."""
        self._claims.discard((message_id, recipient.lower()))
        # UpdateItem, not DeleteItem: the deliver role may get, put and update only.
        self.table.update_item(Key={"id": self._claim_id(message_id, recipient)},
                               UpdateExpression="SET released = :t",
                               ConditionExpression="attribute_exists(id) AND attribute_not_exists(outcome)",
                               ExpressionAttributeValues={":t": True})

    def claim_age(self, message_id: str, recipient: str) -> float | None:
        item = self.table.get_item(Key={"id": self._claim_id(message_id, recipient)}).get("Item")
        return None if not item else time.time() - float(item.get("claimed_at", 0))

    def claim_is_stale(self, message_id: str, recipient: str) -> bool:
        age = self.claim_age(message_id, recipient)
        return age is not None and age > _STALE_CLAIM_SECONDS

    def finish_delivery(self, message_id: str, recipient: str, outcome: str) -> None:
        self._claims.discard((message_id, recipient.lower()))
        self.table.update_item(
            Key={"id": self._claim_id(message_id, recipient)},
            UpdateExpression="SET outcome = :o, finished_at = :t, expires_at = :e",
            ExpressionAttributeValues={":o": outcome, ":t": int(time.time()), ":e": self._expires()})

    def delivery_outcome(self, message_id: str, recipient: str) -> str | None:
        item = self.table.get_item(Key={"id": self._claim_id(message_id, recipient)}).get("Item")
        return str(item["outcome"]) if item and item.get("outcome") else None


def _trace_matches(record: MessageRecord, query: TraceQuery) -> bool:
    """The text and report criteria of a trace search, case-insensitive substrings."""
    def has(value: str | None, wanted: str) -> bool:
        return wanted.casefold() in (value or "").casefold()

    report = record.report or {}
    if query.sender and not (has(record.mail_from, query.sender)
                             or has(str(report.get("from") or ""), query.sender)):
        return False
    if query.recipient and not any(has(r, query.recipient) for r in record.rcpt_to):
        return False
    if query.subject and not has(record.subject, query.subject):
        return False
    attachments = [a for a in report.get("attachments", []) if isinstance(a, dict)]
    if query.verdict and not any(a.get("verdict") == query.verdict for a in attachments):
        return False
    if query.symbol:
        symbols = {f.get("symbol") for f in report.get("findings", []) if isinstance(f, dict)}
        symbols |= {s for a in attachments for s in a.get("symbols", [])}
        if query.symbol not in symbols:
            return False
    return True


_MAX_REPORT_CHARS = 300_000  # a DynamoDB item holds 400 KB in all
_SLIM_REPORT = ("message_id", "disposition", "auth", "spam", "actions", "portal_url", "id", "tenant",
                "subject", "deliveries")


def _fitting_report(report: Any) -> Any:
    """The report, or, when it would not fit in the row, its summary (the full one is in the
    stage state in S3): never a failed log write because a message had 5,000 findings."""
    if not isinstance(report, dict) or len(json.dumps(report, ensure_ascii=False)) <= _MAX_REPORT_CHARS:
        return report
    slim = {k: report[k] for k in _SLIM_REPORT if k in report}
    slim["attachments"] = [{k: a.get(k) for k in ("path", "filename", "verdict", "action")}
                           for a in report.get("attachments", [])[:200]]
    slim["truncated"] = True
    return slim


def _record(item: dict[str, Any]) -> MessageRecord:
    def text(key: str) -> str | None:
        value = item.get(key)
        return None if value is None else str(value)

    return MessageRecord(
        id=str(item["id"]),
        received_at=datetime.fromisoformat(str(item.get("received_at") or "1970-01-01T00:00:00+00:00")),
        updated_at=datetime.fromisoformat(str(item["updated_at"])) if item.get("updated_at") else None,
        state=str(item.get("status") or item.get("state") or "accepted"),
        mail_from=text("mail_from"), rcpt_to=json.loads(item.get("rcpt_to") or "[]"),
        client_ip=text("client_ip"), helo=text("helo"), message_id=text("message_id"),
        subject=text("subject"), tenant=text("tenant"), disposition=text("disposition"),
        size=int(_plain(item.get("size", 0))), attempts=int(_plain(item.get("attempts", 0))),
        timings=json.loads(item.get("timings") or "{}"),
        report=json.loads(item["report"]) if item.get("report") else None, error=text("error"),
        raw_key=text("raw_key"), stage=text("stage"), next_attempt_at=text("next_attempt_at"),
        tls=text("tls"))
