"""The isolation store port: isolated-file records, portal messages, portal tokens, and the sweep."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailmoat.context import Verdict

if TYPE_CHECKING:  # annotations only: the ports (every Protocol) load with the runtime, not the portal
    from mailmoat.ports import BlobStore, IsolationStore

log = logging.getLogger("mailmoat.isolation")

# 24 bytes = 192 random bits, comfortably above the 128 bits DESIGN §7 asks for.
TOKEN_BYTES = 24


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Only this digest is stored: a leaked table gives no working link."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def blob_key(message_id: str, path: str) -> str:
    return f"isolated/{message_id}/{path}"


def expiry(now: datetime, retention_days: int) -> datetime:
    return now + timedelta(days=max(1, retention_days))


@dataclass(slots=True)
class IsolatedFile:
    """One attachment taken out of a message: kept for the portal, or deleted (`blob_key` None)."""

    message_id: str
    path: str
    filename: str
    size: int
    sha256: str
    declared_type: str
    detected_type: str | None
    verdict: Verdict
    symbols: list[str]
    action: str  # isolate | delete
    expires_at: datetime
    blob_key: str | None = None
    members: list[dict[str, Any]] = field(default_factory=list)
    # Sent to a sandbox and still waiting (verdict analysing): the ticket the poll job asks
    # about, and when it was sent. The ticket goes (None) once the file is decided or timed out.
    sandbox_ticket: str | None = None
    sandbox_submitted_at: datetime | None = None

    @property
    def stored(self) -> bool:
        return self.blob_key is not None


@dataclass(slots=True)
class PortalMessage:
    """What the portal page shows about the message the files came from."""

    id: str
    tenant: str
    language: str
    from_header: str | None
    subject: str | None
    date: str | None
    mail_from: str | None
    route: list[dict[str, Any]]
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PortalAccess:
    """A valid token resolved: which message, for which recipient."""

    message_id: str
    recipient: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class DownloadRecord:
    at: datetime
    message_id: str
    path: str
    kind: str  # original | macro-removed | member:<name>
    client_ip: str | None
    recipient: str


@dataclass(frozen=True, slots=True)
class PortalLink:
    """One recipient's portal link as the admin console lists it (never the token itself)."""

    message_id: str
    recipient: str
    created_at: datetime | None
    expires_at: datetime


def issue_token(store: IsolationStore, message_id: str, recipient: str, expires_at: datetime) -> str:
    """A fresh token for one recipient; replaces (invalidates) any earlier one for that pair."""
    token = new_token()
    store.set_token(message_id, recipient.lower(), hash_token(token), expires_at)
    return token


def redact_portal_url(url: str | None) -> str | None:
    """The portal URL without its token, for anything stored or logged (the message log's
    report): only the recipient's copy of the message carries a working link."""
    if not url or "/m/" not in url:
        return url
    return url.rsplit("/m/", 1)[0] + "/m/<redacted>"


def resolve(store: IsolationStore, token: str, now: datetime) -> PortalAccess | None:
    """The access a token grants, or None for unknown, malformed and expired alike."""
    if not token or len(token) > 128:
        return None
    return store.access(hash_token(token), now)


def sweep(store: IsolationStore, blobs: BlobStore, now: datetime) -> int:
    """Remove expired isolated files (blobs first, then records, messages and tokens).
    Returns how many file records were removed. Safe to run concurrently with the stage:
    only rows already past their expiry are touched."""
    removed = 0
    for record in store.expired(now):
        keys = [record.blob_key] if record.blob_key is not None else []
        opened = store.opened(record.message_id, record.path)  # what a password from mail opened
        keys += [m.blob_key for m in opened.members if m.blob_key] if opened is not None else []
        for key in keys:
            try:
                blobs.delete(key)
            except Exception:  # a missing blob must not keep the record alive forever
                log.warning("expired blob could not be deleted",
                            extra={"message_id": record.message_id})
        removed += 1
    store.delete_expired(now)
    if removed:
        log.info("isolation sweep", extra={"action": "sweep", "count": removed})
    return removed
