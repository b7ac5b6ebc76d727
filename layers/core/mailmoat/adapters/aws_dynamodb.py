"""DynamoDB adapters: directory and stage ledger, and the helpers the message log
(aws_dynamodb_log.py) and the isolation store (aws_dynamodb_isolation.py) share.

Table layouts (template.yaml):
- directory (pk, sk): ("TENANT", <name>) config JSON; ("DOMAIN#<domain>", "DOMAIN") tenant;
  ("TENANT#<name>", "RCPT#<address>") one recipient.
- message log (id): one row per message; `status` always, `state` only while unfinished so the
  sparse `by-state` index holds just what the reconciler needs. Delivery claims are rows
  "<id>#rcpt#<address>" created with a conditional put: at most one delivery per recipient.
- isolated files (token): "MSG#<id>" message + its files, "TOK#<sha256>" token, "RCPT#<id>#<addr>"
  pointer to a recipient's current token, "DL#<id>" downloads.
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
from mailmoat.ports import Recipient

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
