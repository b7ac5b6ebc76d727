"""Archive of originals: the raw message stored once, byte for byte, and optionally journalled.

For a tenant with `archive = true`, each delivered message's original (`ctx.raw`, the bytes
stored at `raw/<id>` before isolation or rewrite) goes to the archive store under
`<yyyy>/<mm>/<dd>/<tenant>/<id>.eml`, written once and never overwritten. With
`archive_journal_address` set, a journal message (From the gateway's postmaster, the original
attached as `message/rfc822`, its bytes untouched) is delivered to that mailbox at most once,
so archive systems that import by mailbox (POP) receive the originals too.

`retain_copies()` is the one call the deliver stage makes after delivery: archive, journal and
keep-mail. It never raises into delivery; what fails becomes a finding and a log line.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING

from mailmoat.context import AttachmentAction, Disposition, MessageContext, Verdict
from mailmoat.ports import DeliveryError
from mailmoat.states import Outcome

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.pipeline import Services
    from mailmoat.ports import BlobStore
    from mailmoat.settings import Settings

log = logging.getLogger("mailmoat.archive")

_ID_TIME = re.compile(r"^(\d{8}T\d{6})Z-")  # runtime.new_message_id(): time-sortable ids
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._@+-]")
JOURNAL_PREFIX = "journal:"
ARCHIVE_LOG_KEY = "archive"  # the message log's delivery row that records where the original went


class BlobArchive:
    """The archive on a blob store root of its own (locally `FsBlobStore(<data_dir>/archive)`).
    Locally one worker processes a message at a time, so exists-then-put cannot race itself."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def put_once(self, key: str, data: bytes) -> bool:
        if self.blobs.exists(key):
            return False
        self.blobs.put(key, data)
        return True

    def get(self, key: str) -> bytes:
        return self.blobs.get(key)

    def exists(self, key: str) -> bool:
        return self.blobs.exists(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return self.blobs.keys(prefix)


def checked_key(key: str) -> str:
    """A relative key without `.`/`..` segments or NULs: the archive is never written outside its root."""
    if not key or key.startswith("/") or any(p in (".", "..") for p in key.split("/")) or "\x00" in key:
        raise ValueError(f"bad archive key: {key!r}")
    return key


# --- what is archived -------------------------------------------------------------------------

def archive_root(settings: Settings) -> Path:
    return settings.archive_dir or settings.data_dir / "archive"


def exclusion(ctx: MessageContext) -> str | None:
    """Why this message is not archived, or None. As in the product: only mail that is
    delivered; spam sent to quarantine and mail whose virus was deleted are left out."""
    # HELD here means a delivery in doubt during this deliver run; the others went out.
    if ctx.disposition not in (Disposition.DELIVER, Disposition.HELD) or not ctx.deliveries:
        return f"disposition {ctx.disposition}"
    # Spam quarantine is per recipient (outcome "quarantined: spam"): a message every recipient
    # only has in the spam quarantine is not archived; one that reached a mailbox is.
    if all(Outcome.of(o) is Outcome.QUARANTINED for o in ctx.deliveries.values()):
        return "spam quarantined"
    for attachment in ctx.attachments:
        if "VIRUS" in attachment.symbols or (
                attachment.verdict == Verdict.DANGER and attachment.action == AttachmentAction.DELETE):
            return "virus deleted"
    return None


def received_at(ctx: MessageContext, services: Services) -> datetime:
    """When the gateway took the message: the log row, else the time in our own id. Stable
    across re-runs, so a re-run finds the same archive key."""
    record = services.log.get(ctx.id)
    if record is not None:
        return record.received_at
    match = _ID_TIME.match(ctx.id)
    if match:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return services.clock.now()


def archive_key(ctx: MessageContext, when: datetime) -> str:
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    tenant = _SAFE_SEGMENT.sub("_", ctx.tenant or "default").strip(".") or "default"
    message = _SAFE_SEGMENT.sub("_", ctx.id).strip(".") or "message"
    return f"{when:%Y/%m/%d}/{tenant}/{message}.eml"


def postmaster(settings: Settings) -> str:
    return settings.postmaster  # MAILMOAT_POSTMASTER_ADDRESS, else postmaster@<smtp_hostname>


# --- the journal message ----------------------------------------------------------------------

def _linesep(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw[:65536] else b"\n"


def _transfer_encoding(raw: bytes) -> str:
    """RFC 2046 allows 7bit, 8bit or binary for message/rfc822: the label that tells the truth
    about the bytes, which are never re-encoded."""
    if b"\x00" in raw or any(len(line) > 998 for line in raw.splitlines()):
        return "binary"
    return "7bit" if raw.isascii() else "8bit"


def _header(name: str, value: str, sep: bytes) -> bytes:
    # The SMTP policy folds and RFC 2047-encodes non-ASCII (a Japanese subject) for us.
    folded = str(policy.SMTP.header_factory(name, value).fold(policy=policy.SMTP)).encode("ascii")
    return folded.replace(b"\r\n", sep)


def journal_message(raw: bytes, *, sender: str, to: str, ctx: MessageContext,
                    when: datetime, now: datetime) -> bytes:
    """A new message carrying `raw` as a `message/rfc822` attachment, byte for byte. Built by
    hand: a MIME generator would re-fold headers or re-encode the body of the original."""
    sep = _linesep(raw)
    while True:
        boundary = f"=_mailmoat-journal-{secrets.token_hex(12)}"
        if f"--{boundary}".encode() not in raw:
            break
    envelope = ctx.envelope
    summary = "\n".join([
        "Journal copy of an inbound message (mailmoat archive).",
        f"Gateway id: {ctx.id}",
        f"Received: {format_datetime(when if when.tzinfo else when.replace(tzinfo=UTC))}",
        f"Envelope from: {envelope.mail_from or '<>'}",
        f"Envelope to: {', '.join(envelope.rcpt_to)}",
        f"Message-ID: {ctx.message_id or '-'}",
        "The original is attached unchanged (message/rfc822).",
        "",
    ]).encode("utf-8").replace(b"\n", sep)
    subject = " ".join((ctx.subject or "").split())  # no line breaks into our header block
    headers = b"".join([
        _header("From", sender, sep),
        _header("To", to, sep),
        _header("Subject", f"[journal] {subject}".strip(), sep),
        _header("Date", format_datetime(now if now.tzinfo else now.replace(tzinfo=UTC)), sep),
        _header("Message-ID", make_msgid(domain=sender.rpartition("@")[2] or "mailmoat.localhost"), sep),
        _header("Auto-Submitted", "auto-generated", sep),
        _header("X-Mailmoat-Journal", ctx.id, sep),
        b"MIME-Version: 1.0" + sep,
        f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode() + sep,
    ])
    delimiter = f"--{boundary}".encode()
    original = raw if raw.endswith(sep) else raw + sep  # the delimiter's own line break
    return b"".join([
        headers, sep,
        delimiter, sep,
        b"Content-Type: text/plain; charset=utf-8", sep,
        b"Content-Transfer-Encoding: 8bit", sep, sep,
        summary,
        delimiter, sep,
        b"Content-Type: message/rfc822", sep,
        f"Content-Transfer-Encoding: {_transfer_encoding(raw)}".encode(), sep,
        b'Content-Disposition: attachment; filename="original.eml"', sep, sep,
        original,
        delimiter, b"--", sep,
    ])


def attached_original(journal: bytes) -> bytes:
    """The bytes of the attached original, cut out of a journal message exactly as we wrote it
    (the inverse of journal_message, for tests and for tools that re-import)."""
    match = re.search(rb'boundary="([^"]+)"', journal)
    if match is None:
        raise ValueError("not a journal message")
    delimiter = b"--" + match.group(1)
    sep = _linesep(journal)
    head = journal.index(b"Content-Type: message/rfc822")
    start = journal.index(sep + sep, head) + 2 * len(sep)
    end = journal.rindex(delimiter + b"--")
    return journal[start:end]


# --- the deliver-stage hook -------------------------------------------------------------------

def retain_copies(ctx: MessageContext, services: Services) -> None:
    """Archive, journal and keep-mail for one message after delivery. Idempotent on re-runs;
    never raises into the deliver stage (a failure is a finding and an error log line)."""
    for step, what in ((_archive, "ARCHIVE_FAILED"), (_keepmail, "KEEPMAIL_FAILED")):
        try:
            step(ctx, services)
        except Exception as exc:
            log.exception("retaining a copy failed", extra={"message_id": ctx.id, "symbol": what})
            ctx.add(what, "message", f"{type(exc).__name__}: {exc}"[:300])


def _keepmail(ctx: MessageContext, services: Services) -> None:
    from mailmoat.keepmail import retain

    retain(ctx, services)


def _archive(ctx: MessageContext, services: Services) -> None:
    tenant = services.tenant(ctx)
    if not tenant.archive:
        return
    why = exclusion(ctx)
    if why is not None:
        log.info("not archived", extra={"message_id": ctx.id, "tenant": ctx.tenant, "detail": why})
        return
    store = services.archive
    if store is None:
        ctx.add("ARCHIVE_FAILED", "message", "the tenant archives but no archive store is configured")
        return
    when = received_at(ctx, services)
    key = archive_key(ctx, when)
    written = store.put_once(key, ctx.raw)
    services.log.finish_delivery(ctx.id, ARCHIVE_LOG_KEY, f"archived: {key}")
    ctx.add_action("archive")
    log.info("original archived", extra={"message_id": ctx.id, "tenant": ctx.tenant,
                                         "action": "archive" if written else "archive-exists"})
    if tenant.archive_journal_address:
        _journal(ctx, services, tenant, when)


def _journal(ctx: MessageContext, services: Services, tenant: TenantConfig, when: datetime) -> None:
    """At most once per (message, journal address), like a recipient's delivery."""
    address = (tenant.archive_journal_address or "").strip()
    key = f"{JOURNAL_PREFIX}{address.lower()}"
    logbook = services.log
    done = logbook.delivery_outcome(ctx.id, key)
    kind = Outcome.of(done)
    if kind in (Outcome.DELIVERED, Outcome.FAILED, Outcome.HELD):
        if kind is Outcome.DELIVERED:
            ctx.add_action("journal")
        return
    mailer = services.mailer_for(tenant)
    if not logbook.claim_delivery(ctx.id, key) and not getattr(mailer, "idempotent", False):
        # An earlier run claimed it and recorded nothing: it may have sent. Never twice.
        ctx.add("JOURNAL_IN_DOUBT", "message", "an earlier journal attempt was interrupted")
        return
    sender = postmaster(services.settings)
    data = journal_message(ctx.raw, sender=sender, to=address, ctx=ctx, when=when,
                           now=services.clock.now())
    try:
        where = mailer.deliver(f"{ctx.id}.journal", address, sender, data)
    except DeliveryError as exc:
        if exc.maybe_delivered:
            logbook.finish_delivery(ctx.id, key, f"held: may already be delivered ({exc})"[:300])
            ctx.add("JOURNAL_IN_DOUBT", "message", str(exc)[:300])
        elif exc.permanent:
            logbook.finish_delivery(ctx.id, key, f"failed: {exc}"[:300])
            ctx.add("JOURNAL_FAILED", "message", str(exc)[:300])
        else:
            logbook.release_delivery(ctx.id, key)  # nothing sent: `mailmoat redrive` retries
            ctx.add("JOURNAL_DEFERRED", "message", str(exc)[:300])
        log.warning("journal not delivered", extra={"message_id": ctx.id, "tenant": ctx.tenant,
                                                    "action": "journal"})
        return
    logbook.finish_delivery(ctx.id, key, f"delivered: {where}"[:300])
    ctx.add_action("journal")
    log.info("journal delivered", extra={"message_id": ctx.id, "tenant": ctx.tenant,
                                         "action": "journal"})
