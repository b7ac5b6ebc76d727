"""DynamoDB isolation store (token): "MSG#<id>" message + its files, "TOK#<sha256>" token,
"RCPT#<id>#<addr>" pointer to a recipient's current token, "DL#<id>" downloads, "ATT#<id>#<path>"
password tries, "PPAP#<tenant>#<domain>" held encrypted files a follow-up may open and
"OPEN#<id>#<path>" what a password from mail opened (mailmoat.ppap; never a password), and
"RH#<key>" the retro-hunt's markers (mailmoat.retrohunt: signature state, notices sent).
Expired rows go by TTL (`expires_at`), their blobs by the quarantine bucket's lifecycle."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mailmoat.adapters.aws_dynamodb import _DAY, _MAX_LIST, _epoch, _table, _ts
from mailmoat.context import Verdict
from mailmoat.isolation import DownloadRecord, IsolatedFile, PortalAccess, PortalLink, PortalMessage
from mailmoat.ppap import OpenedFile, PairableFile

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
            "files": json.dumps([_file_dict(f) for f in files], ensure_ascii=False),
            "analysing": any(f.sandbox_ticket for f in files)})

    def update_file(self, file: IsolatedFile) -> None:
        """One file of the message's item rewritten; `analysing` says whether any still waits."""
        files = [file if (f.path == file.path) else f for f in self.files(file.message_id)]
        if not any(f.path == file.path for f in files):
            return  # the message expired meanwhile (TTL): nothing to decide any more
        self.table.update_item(
            Key={"token": f"MSG#{file.message_id}"},
            UpdateExpression="SET #f = :f, analysing = :a",
            ConditionExpression="attribute_exists(#t)",
            ExpressionAttributeNames={"#f": "files", "#t": "token"},
            ExpressionAttributeValues={
                ":f": json.dumps([_file_dict(f) for f in files], ensure_ascii=False),
                ":a": any(f.sandbox_ticket for f in files)})

    def analysing(self, limit: int = 200) -> list[IsolatedFile]:
        """A bounded filtered scan for messages flagged `analysing` (few at a time: the flag
        goes once every file of the message is decided)."""
        from boto3.dynamodb.conditions import Attr

        found: list[IsolatedFile] = []
        for item in self._scan(Attr("token").begins_with("MSG#") & Attr("analysing").eq(True)):
            found += [f for f in (_file_from(d) for d in json.loads(item.get("files") or "[]"))
                      if f.sandbox_ticket]
        found.sort(key=lambda f: f.sandbox_submitted_at or f.expires_at)
        return found[:max(1, limit)]

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

    def add_pairable(self, entry: PairableFile) -> None:
        self._append(f"PPAP#{entry.tenant}#{entry.sender_domain}", entry.to_dict(),
                     _epoch(entry.expires_at) + _DAY)

    def pairable(self, tenant: str, sender_domain: str, now: datetime) -> list[PairableFile]:
        entries = [PairableFile.from_dict(e) for e in self._entries(f"PPAP#{tenant}#{sender_domain}")]
        aware = now if now.tzinfo else now.replace(tzinfo=UTC)
        return [e for e in entries if e.expires_at > aware]

    def set_opened(self, opened: OpenedFile, expires_at: datetime) -> None:
        self.table.put_item(Item={"token": f"OPEN#{opened.message_id}#{opened.path}",
                                  "data": json.dumps(opened.to_dict(), ensure_ascii=False),
                                  "expires_at": _epoch(expires_at)})

    def opened(self, message_id: str, path: str) -> OpenedFile | None:
        item = self._get(f"OPEN#{message_id}#{path}")
        return OpenedFile.from_dict(json.loads(str(item["data"]))) if item else None

    # Retro-hunt (mailmoat.retrohunt): bounded filtered scans like the console's; markers are
    # "RH#<key>" items (TTL by expires_at when they have one).
    def held_files(self, now: datetime, limit: int) -> list[IsolatedFile]:
        from boto3.dynamodb.conditions import Attr

        aware = now if now.tzinfo else now.replace(tzinfo=UTC)
        found: list[IsolatedFile] = []
        for item in self._scan(Attr("token").begins_with("MSG#")):
            found += [f for f in (_file_from(d) for d in json.loads(item.get("files") or "[]"))
                      if f.blob_key is not None and f.expires_at > aware]
        found.sort(key=lambda f: f.expires_at, reverse=True)
        return found[:max(1, limit)]

    def downloaded_since(self, since: datetime, limit: int) -> list[DownloadRecord]:
        from boto3.dynamodb.conditions import Attr

        aware = since if since.tzinfo else since.replace(tzinfo=UTC)
        found: list[DownloadRecord] = []
        for item in self._scan(Attr("token").begins_with("DL#")):
            message_id = str(item["token"]).removeprefix("DL#")
            found += [d for d in self.downloads(message_id) if d.at >= aware]
        found.sort(key=lambda d: d.at, reverse=True)
        return found[:max(1, limit)]

    def mark_danger(self, message_id: str, path: str, symbols: list[str]) -> bool:
        files = self.files(message_id)
        target = next((f for f in files if f.path == path), None)
        if target is None:
            return False
        target.verdict, target.blob_key = Verdict.DANGER, None
        target.symbols = list(dict.fromkeys(list(target.symbols) + list(symbols)))
        self.table.update_item(
            Key={"token": f"MSG#{message_id}"}, UpdateExpression="SET #f = :f",
            ConditionExpression="attribute_exists(#t)",
            ExpressionAttributeNames={"#f": "files", "#t": "token"},
            ExpressionAttributeValues={":f": json.dumps([_file_dict(f) for f in files],
                                                        ensure_ascii=False)})
        return True

    def get_marker(self, key: str) -> str | None:
        item = self._get(f"RH#{key}")
        if not item or ("expires_at" in item and int(item["expires_at"]) <= _epoch(datetime.now(UTC))):
            return None
        return str(item["value"])

    def put_marker(self, key: str, value: str, expires_at: datetime | None) -> None:
        item: dict[str, Any] = {"token": f"RH#{key}", "value": value}
        if expires_at is not None:
            item["expires_at"] = _epoch(expires_at)
        self.table.put_item(Item=item)

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
            "expires_at": _ts(f.expires_at), "blob_key": f.blob_key, "members": f.members,
            "sandbox_ticket": f.sandbox_ticket,
            "sandbox_submitted_at": _ts(f.sandbox_submitted_at) if f.sandbox_submitted_at else None}


def _file_from(d: dict[str, Any]) -> IsolatedFile:
    return IsolatedFile(
        message_id=d["message_id"], path=d["path"], filename=d["filename"], size=int(d["size"]),
        sha256=d["sha256"], declared_type=d["declared_type"], detected_type=d.get("detected_type"),
        verdict=Verdict(d["verdict"]), symbols=list(d.get("symbols", [])), action=d["action"],
        expires_at=datetime.fromisoformat(d["expires_at"]), blob_key=d.get("blob_key"),
        members=list(d.get("members", [])), sandbox_ticket=d.get("sandbox_ticket"),
        sandbox_submitted_at=datetime.fromisoformat(d["sandbox_submitted_at"])
        if d.get("sandbox_submitted_at") else None)
