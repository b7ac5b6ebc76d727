"""The small interfaces stages use to reach the outside; adapters implement them (DESIGN §2)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

# --- errors a port may raise ---------------------------------------------------------------

class DnsError(Exception):
    """Base for resolver outcomes that are not answers."""


class NXDomain(DnsError):
    """The name does not exist."""


class NoData(DnsError):
    """The name exists but has no records of the asked type."""


class DnsTimeout(DnsError):
    """No answer in time (SPF temperror, DMARC temperror)."""


class DeliveryError(Exception):
    """A delivery attempt failed. `permanent` separates 5xx from 4xx/connection trouble."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None,
                 maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        # The connection broke after the message data was handed over: the host may have
        # it. Sending again could deliver twice, so such a delivery is held, not retried.
        self.maybe_delivered = maybe_delivered


# --- value types shared by ports ---------------------------------------------------------

RECIPIENT_KINDS = ("user", "shared", "group", "list")  # list: a distribution / mailing list
RECIPIENT_SOURCES = ("manual", "csv", "config", "m365", "google")


@dataclass(slots=True)
class Recipient:
    address: str
    tenant: str
    name: str = ""
    organisation: str = ""
    department: str = ""
    title: str = ""
    memo: str = ""
    spam_filter: bool = True
    kind: str = "user"
    # Other addresses that reach the same mailbox; recipient(alias) finds this recipient.
    aliases: list[str] = field(default_factory=list)
    # Who created the row: a directory sync removes only rows its own provider created.
    source: str = "manual"
    # The provider's object id (Graph / Google id): a delta names deleted objects only by id.
    external_id: str = ""


@dataclass(slots=True)
class MessageRecord:
    """One line of the message log: what came in and where it ended."""

    id: str
    received_at: datetime
    state: str  # accepted | processing | delivered | quarantined | dropped | held
    mail_from: str | None = None
    rcpt_to: list[str] = field(default_factory=list)
    client_ip: str | None = None
    helo: str | None = None
    message_id: str | None = None
    subject: str | None = None
    tenant: str | None = None
    disposition: str | None = None
    size: int = 0
    attempts: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    error: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """A message-trace search (admin console). Text fields match substrings, case-insensitive;
    `verdict` matches any attachment's verdict, `symbol` any finding's or attachment's symbol."""

    tenant: str | None = None
    sender: str | None = None  # envelope MAIL FROM or the From header
    recipient: str | None = None  # any envelope recipient
    subject: str | None = None
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    state: str | None = None
    disposition: str | None = None
    verdict: str | None = None
    symbol: str | None = None
    limit: int = 50
    offset: int = 0


# --- ports ----------------------------------------------------------------------------------

class BlobStore(Protocol):
    """Raw messages, working copies, quarantined files, archive (S3 or a directory tree)."""

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str = "") -> Iterator[str]: ...


class Directory(Protocol):
    """Tenants and the recipients allowed to receive external mail."""

    def tenant_for_domain(self, domain: str) -> str | None: ...
    def recipient(self, address: str) -> Recipient | None: ...
    def recipients(self, tenant: str | None = None) -> list[Recipient]: ...
    def replace_recipients(self, tenant: str, recipients: Iterable[Recipient]) -> None: ...
    def upsert_recipients(self, recipients: Iterable[Recipient]) -> None: ...
    def ensure_tenant(self, tenant: str, domains: Iterable[str]) -> bool: ...
    def remove_recipients(self, tenant: str, addresses: Iterable[str]) -> None: ...
    def sync_state(self, tenant: str, provider: str) -> dict[str, str]: ...
    def set_sync_state(self, tenant: str, provider: str, state: dict[str, str]) -> None: ...


class MessageLog(Protocol):
    """The trace of every message and its decisions; the source of truth for 'no mail lost'."""

    def accept(self, record: MessageRecord) -> None: ...
    def get(self, message_id: str) -> MessageRecord | None: ...
    def update(self, record_id: str, /, **fields: Any) -> None: ...
    def unfinished(self) -> list[MessageRecord]: ...
    def recent(self, limit: int = 50) -> list[MessageRecord]: ...
    def search(self, query: TraceQuery) -> list[MessageRecord]: ...
    def claim_delivery(self, message_id: str, recipient: str) -> bool: ...
    def release_delivery(self, message_id: str, recipient: str) -> None: ...
    def claim_is_stale(self, message_id: str, recipient: str) -> bool: ...
    def finish_delivery(self, message_id: str, recipient: str, outcome: str) -> None: ...
    def delivery_outcome(self, message_id: str, recipient: str) -> str | None: ...


class Mailer(Protocol):
    """Hands a finished message to the recipient's mailbox host."""

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str: ...


class Resolver(Protocol):
    """DNS answers as text (TXT strings joined, MX as 'pref host'), or a DnsError."""

    def query(self, name: str, rdtype: str) -> list[str]: ...


class GeoIp(Protocol):
    def country(self, ip: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class AntivirusResult:
    infected: bool
    signature: str | None = None
    engine: str = "clamd"


class Antivirus(Protocol):
    def scan(self, data: bytes) -> AntivirusResult: ...


class Clock(Protocol):
    def now(self) -> datetime: ...
