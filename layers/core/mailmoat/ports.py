"""The small interfaces stages use to reach the outside; adapters implement them (DESIGN §2)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from mailmoat.admin.accounts import AdminAccount
    from mailmoat.admin.audit import AuditEntry
    from mailmoat.aws.mailmanager import AddressListPlan, RelayTarget, RoutePlan
    from mailmoat.aws.recipient_rules import RulePlan
    from mailmoat.config import TenantConfig
    from mailmoat.context import MessageContext
    from mailmoat.directory.model import ProviderChanges
    from mailmoat.isolation import DownloadRecord, IsolatedFile, PortalAccess, PortalLink, PortalMessage
    from mailmoat.keepmail import KeptMessage, OneTimeCode
    from mailmoat.ppap import OpenedFile, PairableFile
    from mailmoat.scan.sandbox import SandboxReport, SandboxVerdict
    from mailmoat.spam.quarantine import HeldMessage

T = TypeVar("T")

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
    state: str  # a states.MessageState
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
    # Where the raw bytes are when not at raw/<id>: the messages one multi-tenant envelope was
    # split into share their parent's stored object (runner.Runner.accept).
    raw_key: str | None = None
    stage: str | None = None  # the stage last begun (its attempts are `attempts`)
    next_attempt_at: str | None = None  # a deferred message's next try (ISO, UTC, microseconds)
    tls: str | None = None  # the SMTP session's TLS version and cipher (Envelope.tls); None: clear


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
    def objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """(key, last modified) under a prefix: the reconciler's view of what is stored."""
        ...


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


class TenantDirectory(Directory, Protocol):
    """A directory that also holds each tenant's whole configuration (AWS: the directory table;
    locally the TOML is the configuration)."""

    def tenant_configs(self) -> list[TenantConfig]: ...


class ReceiptRules(Protocol):
    """SES receipt rules whose recipient conditions list the registered addresses."""

    rule_set: str

    def rules(self) -> list[dict[str, Any]]: ...
    def active_rule_set(self) -> str | None: ...
    def apply(self, plan: RulePlan) -> None: ...


class AddressList(Protocol):
    """The Mail Manager address list the inbound traffic policy checks during the SMTP session."""

    def members(self) -> set[str]: ...
    def apply(self, plan: AddressListPlan) -> None: ...


class RelayRoutes(Protocol):
    """Mail Manager relays to the tenants' mailbox hosts and the rule set that picks one."""

    def relays(self) -> dict[str, RelayTarget]: ...
    def apply(self, plan: RoutePlan) -> bool: ...


class MessageLog(Protocol):
    """The trace of every message and its decisions; the source of truth for 'no mail lost'."""

    def accept(self, record: MessageRecord) -> None: ...
    def get(self, message_id: str) -> MessageRecord | None: ...
    def update(self, record_id: str, /, **fields: Any) -> None: ...
    def unfinished(self) -> list[MessageRecord]: ...
    def recent(self, limit: int = 50) -> list[MessageRecord]: ...
    def search(self, query: TraceQuery) -> list[MessageRecord]: ...
    def begin_attempt(self, record_id: str, stage: str) -> int:
        """State `processing`, `stage` set; returns this stage's attempt count (1 the first time)."""
        ...
    def claim_delivery(self, message_id: str, recipient: str) -> bool: ...
    def release_delivery(self, message_id: str, recipient: str) -> None: ...
    def claim_is_stale(self, message_id: str, recipient: str) -> bool: ...
    def finish_delivery(self, message_id: str, recipient: str, outcome: str) -> None: ...
    def delivery_outcome(self, message_id: str, recipient: str) -> str | None: ...
    def received_between(self, tenant: str | None, since: datetime, until: datetime,
                         limit: int) -> list[MessageRecord]:
        """Messages received in [since, until) (one tenant's, or all with None), newest first,
        at most `limit` (the dashboard's aggregation; adapters document further bounds)."""
        ...


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


@dataclass(frozen=True, slots=True)
class AntivirusVerdict:
    """What an antivirus answered for one content (by SHA-256), and when: "clean", "infected"
    (with the signature's name) or "failed" (no answer, with why)."""

    outcome: Literal["clean", "infected", "failed"]
    at: datetime
    signature: str | None = None
    detail: str = ""
    engine: str = "clamd"


class AntivirusVerdicts(Protocol):
    """Verdicts by content hash: the scan image writes them, the portal (no antivirus) reads them."""

    def get(self, sha256: str) -> AntivirusVerdict | None: ...
    def put(self, sha256: str, verdict: AntivirusVerdict) -> None: ...


class AntivirusRequests(Protocol):
    """Asks a process that has an antivirus to scan these bytes later (the portal on AWS: the
    AvScan function); the answer arrives in AntivirusVerdicts."""

    def request(self, sha256: str, data: bytes) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


# --- stores and services of the features (moved here so every port is in one module) ---


class SpamStore(Protocol):
    """Held copies' records and the per-recipient allowed senders (SQLite locally)."""

    def save(self, held: HeldMessage) -> None: ...
    def get(self, message_id: str, recipient: str) -> HeldMessage | None: ...
    def held(self, *, tenant: str | None = None, recipient: str | None = None,
             now: datetime | None = None) -> list[HeldMessage]: ...
    def pending_digest(self, now: datetime, tenant: str | None = None) -> list[HeldMessage]: ...
    def mark_digested(self, keys: list[tuple[str, str]], at: datetime) -> None: ...
    def mark_released(self, message_id: str, recipient: str, at: datetime, by: str) -> None: ...
    def expired(self, now: datetime) -> list[HeldMessage]: ...
    def delete(self, message_id: str, recipient: str) -> None: ...
    def allow_sender(self, recipient: str, sender: str, at: datetime) -> None: ...
    def allowed_senders(self, recipient: str) -> list[str]: ...


class AccountStore(Protocol):
    """Where admin accounts live (local: SQLite; sign-in limits are the AttemptStore's)."""

    def account(self, email: str) -> AdminAccount | None: ...
    def accounts(self) -> list[AdminAccount]: ...
    def create_account(self, account: AdminAccount) -> bool: ...  # False: the address exists
    def set_password_hash(self, email: str, password_hash: str) -> None: ...
    def end_sessions(self, email: str, at_ms: int) -> None: ...


@dataclass(frozen=True, slots=True)
class AttemptState:
    """One sign-in counter (mailmoat.attempts): attempts reserved since it last started over,
    the last one's time, and when the next may come (None: at once)."""

    count: int
    last_at: datetime | None
    next_at: datetime | None


class AttemptStore(Protocol):
    """Sign-in counters that change atomically (local: SQLite; AWS: DynamoDB)."""

    def transition(self, key: str, step: Callable[[AttemptState | None], tuple[T, AttemptState | None]],
                   expires_at: datetime) -> T:
        """Apply `step` to the key's state (None: no counter) as one atomic change and keep what
        it returns (None: delete); returns the step's answer. The row may go after `expires_at`.
        A store that cannot decide in time raises: the caller refuses the sign-in."""
        ...


class PolicyStore(Protocol):
    """Persisted policy per tenant: overrides() is laid over the base configuration."""

    def overrides(self) -> dict[str, dict[str, Any]]: ...
    def save(self, tenant: TenantConfig, admin: str) -> None: ...


class AuditLog(Protocol):
    def record(self, entry: AuditEntry) -> None: ...
    def entries(self, tenant: str | None, limit: int = 100, offset: int = 0) -> list[AuditEntry]: ...


class SignatureStore(Protocol):
    def manifest(self) -> dict[str, Any] | None: ...
    def put_manifest(self, manifest: dict[str, Any]) -> None: ...
    def upload(self, name: str, path: Path, *, sha256: str) -> str: ...
    def download(self, name: str, destination: Path, *, version_id: str = "") -> bool: ...


class KeepMailStore(Protocol):
    """Index rows, credentials, codes and sessions (SQLite locally)."""

    def put(self, kept: KeptMessage) -> None: ...
    def get(self, message_id: str, recipient: str) -> KeptMessage | None: ...
    def messages(self, recipient: str, since: datetime, limit: int = 500) -> list[KeptMessage]: ...
    def expired(self, now: datetime) -> list[KeptMessage]: ...
    def delete(self, message_id: str, recipient: str) -> None: ...

    def set_password(self, address: str, password_hash: str | None) -> None: ...
    def password_hash(self, address: str) -> str | None: ...
    def set_alternate(self, address: str, alternate: str | None) -> None: ...
    def alternate(self, address: str) -> str | None: ...
    def set_code(self, address: str, code: OneTimeCode | None) -> None: ...
    def code(self, address: str) -> OneTimeCode | None: ...
    def count_code_attempt(self, address: str) -> None: ...
    def add_session(self, token_sha256: str, address: str, expires_at: datetime) -> None: ...
    def session(self, token_sha256: str, now: datetime) -> str | None: ...
    def end_session(self, token_sha256: str) -> None: ...
    def purge(self, now: datetime) -> None: ...


class IsolationStore(Protocol):
    """Records of isolated files and the portal tokens that reach them (DESIGN §2)."""

    def save(self, message: PortalMessage, files: list[IsolatedFile]) -> None: ...
    def set_token(self, message_id: str, recipient: str, token_sha256: str,
                  expires_at: datetime) -> None: ...
    def has_token(self, message_id: str, recipient: str) -> bool: ...
    def access(self, token_sha256: str, now: datetime) -> PortalAccess | None: ...
    def message(self, message_id: str) -> PortalMessage | None: ...
    def files(self, message_id: str) -> list[IsolatedFile]: ...
    # The sandbox flow (mailmoat.sandbox_verdicts): files still waiting for a verdict (a
    # sandbox ticket), oldest first, and one file's record rewritten when it is decided.
    def analysing(self, limit: int = 200) -> list[IsolatedFile]: ...
    def update_file(self, file: IsolatedFile) -> None: ...
    def record_download(self, record: DownloadRecord) -> None: ...
    def downloads(self, message_id: str) -> list[DownloadRecord]: ...
    def expired(self, now: datetime) -> list[IsolatedFile]: ...
    def delete_expired(self, now: datetime) -> int: ...
    # The admin console: one tenant's isolated messages, their links, and revoking a link.
    def tenant_messages(self, tenant: str, limit: int = 50, offset: int = 0) -> list[PortalMessage]: ...
    def links(self, message_id: str) -> list[PortalLink]: ...
    def revoke(self, message_id: str, recipient: str) -> bool: ...
    # PPAP pairing (mailmoat.ppap): held encrypted files a follow-up may open, and what a
    # password from mail opened. No method takes or returns a password.
    def add_pairable(self, entry: PairableFile) -> None: ...
    def pairable(self, tenant: str, sender_domain: str, now: datetime) -> list[PairableFile]: ...
    def set_opened(self, opened: OpenedFile, expires_at: datetime) -> None: ...
    def opened(self, message_id: str, path: str) -> OpenedFile | None: ...
    # Retro-hunt (mailmoat.retrohunt): files whose bytes are still kept, downloads since a
    # time (both at most `limit`), a file made danger (its download ends: blob_key None), and
    # small markers (the last signature state, who was told about which file).
    def held_files(self, now: datetime, limit: int) -> list[IsolatedFile]: ...
    def downloaded_since(self, since: datetime, limit: int) -> list[DownloadRecord]: ...
    def mark_danger(self, message_id: str, path: str, symbols: list[str]) -> bool: ...
    def get_marker(self, key: str) -> str | None: ...
    def put_marker(self, key: str, value: str, expires_at: datetime | None) -> None: ...


class ArchiveStore(Protocol):
    """Write-once storage for originals (a directory locally, an S3 bucket with Object Lock on AWS)."""

    def put_once(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` unless something is there already; True when written now."""
        ...

    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def keys(self, prefix: str = "") -> Iterator[str]: ...


class DirectoryProvider(Protocol):
    name: str

    def fetch(self, state: dict[str, str]) -> ProviderChanges: ...


class Sandbox(Protocol):
    """A detonation service. `submit` returns a ticket; `poll` returns None until done, then
    the verdict, or a SandboxReport that also carries the score and what the sandbox named.
    Either raises when the service cannot answer (SandboxUnavailable: its breaker is open)."""

    def submit(self, data: bytes, filename: str | None) -> str: ...
    def poll(self, ticket: str) -> SandboxVerdict | SandboxReport | None: ...


class PdfConverter(Protocol):
    """Makes an attachment into an inert PDF (convert-pdf); raises mailmoat.convert.ConversionError
    when it cannot within its bounds. `filename`'s extension says what the bytes are."""

    def convert(self, data: bytes, filename: str) -> bytes: ...


# --- the runner's hand-off (runner.py): one stage at a time, locally in memory, on AWS via SQS ---

@dataclass(frozen=True, slots=True)
class StageRef:
    """One stage of one stored message, due to run. `recipients` are envelope recipients an
    ingress event named (SES) for a message that has no log row yet."""

    message_id: str
    stage: str
    recipients: tuple[str, ...] = ()
    raw_key: str | None = None  # the stored object, when it is not raw/<id> (Mail Manager keys)


class StageQueue(Protocol):
    """Hands a stage to whoever runs it: an in-process queue locally, the stage's SQS queue on AWS."""

    def send(self, ref: StageRef, delay_seconds: float = 0.0) -> None: ...


class StageInbox(StageQueue, Protocol):
    """A stage queue this process takes from itself (local): the worker and `process_stored`."""

    def take(self, timeout: float = 0.0, *, message: str | None = None,
             due_only: bool = True) -> StageRef | None: ...
    def due(self) -> int: ...
    def waiting(self, message: str | None = None) -> int: ...


class StateStore(Protocol):
    """What one stage leaves for the next: the live context locally (parsed once), a JSON
    snapshot plus the bodies it produced in S3 on AWS."""

    def save(self, ctx: MessageContext, stage: str) -> None: ...
    def load(self, message_id: str, raw: bytes, stage: str) -> MessageContext | None:
        """The context `stage` saved, or None when there is none (restart, expiry)."""
        ...
    def discard(self, message_id: str) -> None: ...


class StageLedger(Protocol):
    """Which stages of a message completed, so a re-delivered event never runs one twice."""

    def is_complete(self, message_id: str, stage: str) -> bool: ...
    def complete(self, message_id: str, stage: str) -> bool: ...
    def forget(self, message_id: str, stages: Iterable[str]) -> None: ...



class Metrics(Protocol):
    """Counters and timings under one set of names (runner.STAGE_MESSAGES …): CloudWatch embedded
    metrics on AWS, Prometheus on `mailmoat serve` (adapters/prometheus.py)."""

    def count(self, name: str, value: float = 1, **dimensions: str) -> None: ...
    def observe(self, name: str, seconds: float, **dimensions: str) -> None:
        """One duration (a histogram locally, a Seconds metric on AWS)."""
        ...
