"""DynamoDB adapters: directory, message log (TTL, delivery claims), isolation store, stage ledger.

Table layouts (template.yaml):
- directory (pk, sk): ("TENANT", <name>) config JSON; ("DOMAIN#<domain>", "DOMAIN") tenant;
  ("TENANT#<name>", "RCPT#<address>") one recipient.
- message log (id): one row per message; `status` always, `state` only while unfinished so the
  sparse `by-state` index holds just what the reconciler needs. Delivery claims are rows
  "<id>#rcpt#<address>" created with a conditional put: at most one delivery per recipient.
- isolated files (token): "MSG#<id>" message + its files, "TOK#<sha256>" token, "RCPT#<id>#<addr>"
  pointer to a recipient's current token, "DL#<id>" downloads, "ATT#<id>#<path>" password tries.
  Expired rows go by TTL (`expires_at`), their blobs by the quarantine bucket's lifecycle.
- idempotency (id, expiration): one row per (message id, stage).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from botocore.exceptions import ClientError

from mailmoat.config import TenantConfig
from mailmoat.context import Verdict
from mailmoat.isolation import DownloadRecord, IsolatedFile, PortalAccess, PortalLink, PortalMessage
from mailmoat.ports import MessageRecord, Recipient, TraceQuery
from mailmoat.states import FINAL_STATES

_DAY = 86_400
_MAX_LIST = 1000  # downloads / password attempts kept per row (rate limiting needs the recent ones)


def _table(table: Any, name: str) -> Any:
    if table is not None:
        return table
    if not name:
        raise ValueError("a DynamoDB table name is required")
    return boto3.resource("dynamodb").Table(name)


def _conditional_failed(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _epoch(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; everything we store is int or JSON text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


# --- directory --------------------------------------------------------------------------------

class DynamoDirectory:
    def __init__(self, table_name: str = "", *, table: Any = None) -> None:
        self.table = _table(table, table_name)

    def ensure_tenant(self, tenant: str, domains: Iterable[str]) -> bool:
        created = True
        try:
            self.table.put_item(Item={"pk": "TENANT", "sk": tenant, "config": "{}"},
                                ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            created = False
        for domain in domains:
            self.table.put_item(Item={"pk": f"DOMAIN#{domain.lower().rstrip('.')}", "sk": "DOMAIN",
                                      "tenant": tenant})
        return created

    def put_tenant_config(self, config: TenantConfig) -> None:
        """The tenant's settings (DESIGN §9 fields) as one row; users stay recipient rows."""
        data = config.model_dump(mode="json", exclude={"users"})
        self.table.put_item(Item={"pk": "TENANT", "sk": config.name, "config": json.dumps(data)})
        self.ensure_tenant(config.name, config.domains)

    def tenant_configs(self) -> list[TenantConfig]:
        items = self._query("TENANT")
        configs = []
        for item in items:
            data = json.loads(item.get("config") or "{}")
            data.setdefault("name", item["sk"])
            data.setdefault("domains", [])
            configs.append(TenantConfig.model_validate(data))
        return configs

    def tenant_for_domain(self, domain: str) -> str | None:
        item = self.table.get_item(
            Key={"pk": f"DOMAIN#{domain.lower().rstrip('.')}", "sk": "DOMAIN"}).get("Item")
        return str(item["tenant"]) if item else None

    def recipient(self, address: str) -> Recipient | None:
        """The recipient for an address or alias. Alias rows carry a full copy of their
        recipient, so an alias costs one more GetItem and no pointer chase."""
        address = address.lower()
        tenant = self.tenant_for_domain(address.rpartition("@")[2])
        if tenant is None:
            return None
        for prefix in ("RCPT#", "ALIAS#"):
            item = self.table.get_item(Key={"pk": f"TENANT#{tenant}", "sk": f"{prefix}{address}"}).get("Item")
            if item:
                return _recipient(item)
        return None

    def recipients(self, tenant: str | None = None) -> list[Recipient]:
        tenants = [tenant] if tenant is not None else [str(i["sk"]) for i in self._query("TENANT")]
        found = [_recipient(i) for t in tenants for i in self._query(f"TENANT#{t}", "RCPT#")]
        return sorted(found, key=lambda r: r.address)

    def upsert_recipients(self, recipients: Iterable[Recipient]) -> None:
        new = {r.address.lower(): r for r in recipients}
        stale: list[tuple[str, str]] = []
        for tenant in sorted({r.tenant for r in new.values()}):
            wanted = {(a.lower(), address) for address, r in new.items() if r.tenant == tenant
                      for a in r.aliases}
            stale += [(tenant, alias) for alias, owner in self._aliases(tenant).items()
                      if owner in new and (alias, owner) not in wanted]
        with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for tenant, alias in stale:
                batch.delete_item(Key={"pk": f"TENANT#{tenant}", "sk": f"ALIAS#{alias}"})
            for r in new.values():
                for item in _recipient_items(r):
                    batch.put_item(Item=item)

    def replace_recipients(self, tenant: str, recipients: Iterable[Recipient]) -> None:
        new = {r.address.lower(): r for r in recipients}
        old = {str(i["sk"]).removeprefix("RCPT#") for i in self._query(f"TENANT#{tenant}", "RCPT#")}
        wanted = {a.lower() for r in new.values() for a in r.aliases}
        with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for address in old - set(new):
                batch.delete_item(Key={"pk": f"TENANT#{tenant}", "sk": f"RCPT#{address}"})
            for alias in set(self._aliases(tenant)) - wanted:
                batch.delete_item(Key={"pk": f"TENANT#{tenant}", "sk": f"ALIAS#{alias}"})
            for r in new.values():
                for item in _recipient_items(r):
                    batch.put_item(Item=item)

    def remove_recipients(self, tenant: str, addresses: Iterable[str]) -> None:
        gone = {a.lower() for a in addresses}
        aliases = [alias for alias, owner in self._aliases(tenant).items() if owner in gone]
        with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for alias in aliases:
                batch.delete_item(Key={"pk": f"TENANT#{tenant}", "sk": f"ALIAS#{alias}"})
            for address in gone:
                batch.delete_item(Key={"pk": f"TENANT#{tenant}", "sk": f"RCPT#{address}"})

    def sync_state(self, tenant: str, provider: str) -> dict[str, str]:
        item = self.table.get_item(Key={"pk": f"TENANT#{tenant}", "sk": f"SYNC#{provider}"}).get("Item")
        state = json.loads(str(item.get("state") or "{}")) if item else {}
        return {str(k): str(v) for k, v in state.items()} if isinstance(state, dict) else {}

    def set_sync_state(self, tenant: str, provider: str, state: dict[str, str]) -> None:
        self.table.put_item(Item={"pk": f"TENANT#{tenant}", "sk": f"SYNC#{provider}",
                                  "state": json.dumps(state), "updated_at": _ts(datetime.now(UTC))})

    def _aliases(self, tenant: str) -> dict[str, str]:
        """alias → owning address, for one tenant (one paged query)."""
        return {str(i["sk"]).removeprefix("ALIAS#"): str(i["address"])
                for i in self._query(f"TENANT#{tenant}", "ALIAS#")}

    def _query(self, pk: str, sk_prefix: str | None = None) -> list[dict[str, Any]]:
        from boto3.dynamodb.conditions import Key

        condition = Key("pk").eq(pk)
        if sk_prefix:
            condition = condition & Key("sk").begins_with(sk_prefix)
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": condition}
        while True:
            page = self.table.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _recipient_items(r: Recipient) -> list[dict[str, Any]]:
    """The recipient row and one row per alias, each a full copy (one GetItem per lookup)."""
    address = r.address.lower()
    aliases = sorted({a.lower() for a in r.aliases} - {address})
    item = {"pk": f"TENANT#{r.tenant}", "sk": f"RCPT#{address}",
            "address": address, "tenant": r.tenant, "name": r.name,
            "organisation": r.organisation, "department": r.department, "title": r.title,
            "memo": r.memo, "spam_filter": r.spam_filter, "kind": r.kind, "aliases": aliases,
            "source": r.source, "external_id": r.external_id}
    return [item, *({**item, "sk": f"ALIAS#{alias}"} for alias in aliases)]


def _recipient(item: dict[str, Any]) -> Recipient:
    return Recipient(address=str(item["address"]), tenant=str(item["tenant"]),
                     name=str(item.get("name", "")), organisation=str(item.get("organisation", "")),
                     department=str(item.get("department", "")), title=str(item.get("title", "")),
                     memo=str(item.get("memo", "")), spam_filter=bool(item.get("spam_filter", True)),
                     kind=str(item.get("kind", "user")), aliases=[str(a) for a in item.get("aliases", [])],
                     source=str(item.get("source", "manual")), external_id=str(item.get("external_id", "")))


# --- message log ------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset({"received_at", "updated_at", "state", "mail_from", "rcpt_to", "client_ip",
                            "helo", "message_id", "subject", "tenant", "disposition", "size",
                            "attempts", "next_attempt_at", "timings", "report", "error",
                            "stage", "raw_key"})  # stage: the stage last begun (the reconciler's cue)
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
            "raw_key": record.raw_key, "expires_at": self._expires()}
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
        for state in ("accepted", "processing", "deferred"):
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
        raw_key=text("raw_key"), stage=text("stage"), next_attempt_at=text("next_attempt_at"))


# --- stage ledger (idempotency table) -----------------------------------------------------------

class DynamoStageLedger:
    """One row per (message id, stage): a stage that completed is never run again for the same
    message, whatever SQS or S3 re-deliver. Layout of powertools idempotency (id, expiration)."""

    def __init__(self, table_name: str = "", *, table: Any = None, ttl_days: int = 7) -> None:
        self.table = _table(table, table_name)
        self.ttl_seconds = max(1, ttl_days) * _DAY

    @staticmethod
    def key(message_id: str, stage: str) -> str:
        return f"stage#{message_id}#{stage}"

    def is_complete(self, message_id: str, stage: str) -> bool:
        item = self.table.get_item(Key={"id": self.key(message_id, stage)}).get("Item")
        return bool(item) and item.get("status") == "COMPLETED"

    def forget(self, message_id: str, stages: Iterable[str]) -> None:
        """A redrive runs every stage again."""
        for stage in stages:
            self.table.delete_item(Key={"id": self.key(message_id, stage)})

    def complete(self, message_id: str, stage: str) -> bool:
        """Mark done; False when another run completed it first."""
        try:
            self.table.put_item(
                Item={"id": self.key(message_id, stage), "status": "COMPLETED",
                      "expiration": int(time.time()) + self.ttl_seconds},
                ConditionExpression="attribute_not_exists(id) OR #s <> :c",
                ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":c": "COMPLETED"})
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            return False
        return True


# --- isolation store ----------------------------------------------------------------------------

class DynamoIsolationStore:
    """The IsolationStore protocol (isolation.py) on the isolated-files table. Only UpdateItem,
    GetItem and PutItem are used by the stage, UpdateItem/GetItem by the portal (template roles)."""

    def __init__(self, table_name: str = "", *, table: Any = None) -> None:
        self.table = _table(table, table_name)

    def _get(self, token: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.table.get_item(Key={"token": token}).get("Item")
        return item

    def save(self, message: PortalMessage, files: list[IsolatedFile]) -> None:
        self.table.put_item(Item={
            "token": f"MSG#{message.id}", "tenant": message.tenant, "language": message.language,
            "from_header": message.from_header, "subject": message.subject, "date": message.date,
            "mail_from": message.mail_from, "route": json.dumps(message.route, ensure_ascii=False),
            "created_at": _ts(message.created_at), "expires": _ts(message.expires_at),
            "expires_at": _epoch(message.expires_at),
            "files": json.dumps([_file_dict(f) for f in files], ensure_ascii=False)})

    def set_token(self, message_id: str, recipient: str, token_sha256: str,
                  expires_at: datetime) -> None:
        pointer = self._get(f"RCPT#{message_id}#{recipient}")
        if pointer and pointer.get("sha256") != token_sha256:
            # Revoke the earlier token: expire it now (TTL removes the row later).
            self.table.update_item(Key={"token": f"TOK#{pointer['sha256']}"},
                                   UpdateExpression="SET revoked = :t",
                                   ExpressionAttributeValues={":t": True})
        self.table.put_item(Item={"token": f"TOK#{token_sha256}", "message_id": message_id,
                                  "recipient": recipient, "expires": _ts(expires_at),
                                  "expires_at": _epoch(expires_at), "created": _ts(datetime.now(UTC))})
        self.table.put_item(Item={"token": f"RCPT#{message_id}#{recipient}", "sha256": token_sha256,
                                  "expires_at": _epoch(expires_at)})

    def has_token(self, message_id: str, recipient: str) -> bool:
        return self._get(f"RCPT#{message_id}#{recipient.lower()}") is not None

    def access(self, token_sha256: str, now: datetime) -> PortalAccess | None:
        item = self._get(f"TOK#{token_sha256}")
        if not item or item.get("revoked"):
            return None
        expires = datetime.fromisoformat(str(item["expires"]))
        if expires <= (now if now.tzinfo else now.replace(tzinfo=UTC)):
            return None  # TTL deletion lags by up to days; expiry is checked here
        return PortalAccess(str(item["message_id"]), str(item["recipient"]), expires)

    def message(self, message_id: str) -> PortalMessage | None:
        item = self._get(f"MSG#{message_id}")
        if not item:
            return None
        return PortalMessage(
            id=message_id, tenant=str(item["tenant"]), language=str(item["language"]),
            from_header=item.get("from_header"), subject=item.get("subject"), date=item.get("date"),
            mail_from=item.get("mail_from"), route=json.loads(item.get("route") or "[]"),
            created_at=datetime.fromisoformat(str(item["created_at"])),
            expires_at=datetime.fromisoformat(str(item["expires"])))

    def files(self, message_id: str) -> list[IsolatedFile]:
        item = self._get(f"MSG#{message_id}")
        if not item:
            return []
        files = [_file_from(d) for d in json.loads(item.get("files") or "[]")]
        return sorted(files, key=lambda f: [int(x) if x.isdigit() else 0 for x in f.path.split(".")])

    def _append(self, token: str, entry: dict[str, Any], expires_at: int) -> None:
        self.table.update_item(
            Key={"token": token},
            UpdateExpression="SET entries = list_append(if_not_exists(entries, :empty), :e), "
                             "expires_at = :x",
            ExpressionAttributeValues={":empty": [], ":e": [json.dumps(entry)], ":x": expires_at})

    def _entries(self, token: str) -> list[dict[str, Any]]:
        item = self._get(token)
        return [json.loads(e) for e in (item or {}).get("entries", [])][-_MAX_LIST:]

    def record_download(self, record: DownloadRecord) -> None:
        self._append(f"DL#{record.message_id}", {
            "at": _ts(record.at), "path": record.path, "kind": record.kind,
            "client_ip": record.client_ip, "recipient": record.recipient},
            _epoch(record.at) + 400 * _DAY)

    def downloads(self, message_id: str) -> list[DownloadRecord]:
        return [DownloadRecord(datetime.fromisoformat(e["at"]), message_id, e["path"], e["kind"],
                               e.get("client_ip"), e["recipient"])
                for e in self._entries(f"DL#{message_id}")]

    def add_attempt(self, message_id: str, path: str, at: datetime) -> None:
        self._append(f"ATT#{message_id}#{path}", {"at": _ts(at)}, _epoch(at) + _DAY)

    def attempts_since(self, message_id: str, path: str, since: datetime) -> int:
        stamp = _ts(since)
        return sum(1 for e in self._entries(f"ATT#{message_id}#{path}") if e["at"] > stamp)

    def expired(self, now: datetime) -> list[IsolatedFile]:
        return []  # DynamoDB TTL removes rows and the quarantine lifecycle removes the blobs

    def delete_expired(self, now: datetime) -> int:
        return 0

    # The admin console's views: bounded filtered scans (no index by tenant on this table;
    # TTL keeps it to the retention period). At most SCAN_MAX_PAGES pages per call.
    SCAN_MAX_PAGES = 20

    def _scan(self, condition: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"FilterExpression": condition}
        for _ in range(self.SCAN_MAX_PAGES):
            page = self.table.scan(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items

    def tenant_messages(self, tenant: str, limit: int = 50, offset: int = 0) -> list[PortalMessage]:
        from boto3.dynamodb.conditions import Attr

        items = self._scan(Attr("token").begins_with("MSG#") & Attr("tenant").eq(tenant))
        items.sort(key=lambda i: (str(i.get("created_at", "")), str(i["token"])), reverse=True)
        start = max(0, offset)
        found = [self.message(str(i["token"]).removeprefix("MSG#"))
                 for i in items[start:start + max(0, min(limit, 1000))]]
        return [m for m in found if m is not None]

    def links(self, message_id: str) -> list[PortalLink]:
        from boto3.dynamodb.conditions import Attr

        links: list[PortalLink] = []
        for pointer in self._scan(Attr("token").begins_with(f"RCPT#{message_id}#")):
            token = self._get(f"TOK#{pointer['sha256']}")
            if not token or token.get("revoked"):
                continue
            created = token.get("created")
            links.append(PortalLink(message_id, str(token["recipient"]),
                                    datetime.fromisoformat(str(created)) if created else None,
                                    datetime.fromisoformat(str(token["expires"]))))
        return sorted(links, key=lambda link: link.recipient)

    def revoke(self, message_id: str, recipient: str) -> bool:
        pointer = self._get(f"RCPT#{message_id}#{recipient.lower()}")
        if not pointer:
            return False
        token = self._get(f"TOK#{pointer['sha256']}")
        if not token or token.get("revoked"):
            return False
        self.table.update_item(Key={"token": f"TOK#{pointer['sha256']}"},
                               UpdateExpression="SET revoked = :t",
                               ExpressionAttributeValues={":t": True})
        return True


def _file_dict(f: IsolatedFile) -> dict[str, Any]:
    return {"message_id": f.message_id, "path": f.path, "filename": f.filename, "size": f.size,
            "sha256": f.sha256, "declared_type": f.declared_type, "detected_type": f.detected_type,
            "verdict": str(f.verdict), "symbols": list(f.symbols), "action": f.action,
            "expires_at": _ts(f.expires_at), "blob_key": f.blob_key, "members": f.members}


def _file_from(d: dict[str, Any]) -> IsolatedFile:
    return IsolatedFile(
        message_id=d["message_id"], path=d["path"], filename=d["filename"], size=int(d["size"]),
        sha256=d["sha256"], declared_type=d["declared_type"], detected_type=d.get("detected_type"),
        verdict=Verdict(d["verdict"]), symbols=list(d.get("symbols", [])), action=d["action"],
        expires_at=datetime.fromisoformat(d["expires_at"]), blob_key=d.get("blob_key"),
        members=list(d.get("members", [])))

