"""The per-recipient spam quarantine: hold a recipient's copy at delivery, release it, allow a sender.

A held copy is the exact bytes that recipient would have been delivered (our headers and ARC
seal included), stored in the blob store under `spamq/<message id>/<recipient>`, with a record
in the spam store. Release hands those bytes, unchanged, to the tenant's mailer under the
message log's delivery claim, so a double click, two tabs or a retry never deliver twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING

from mailmoat.ports import DeliveryError
from mailmoat.states import MessageState, Outcome

if TYPE_CHECKING:
    from mailmoat.context import MessageContext
    from mailmoat.pipeline import Services

log = logging.getLogger("mailmoat.spam")

HELD = "held"
RELEASED = "released"
QUARANTINED_OUTCOME = "quarantined: spam"


@dataclass(slots=True)
class HeldMessage:
    message_id: str  # the gateway's id
    recipient: str
    tenant: str
    held_at: datetime
    expires_at: datetime
    blob_key: str
    mail_from: str | None = None
    from_header: str | None = None
    subject: str | None = None
    date: str | None = None
    score: float | None = None
    sources: list[str] = field(default_factory=list)
    state: str = HELD  # held | released
    digested_at: datetime | None = None
    released_at: datetime | None = None
    released_by: str | None = None  # "link" | "allow-sender" | "admin"

    @property
    def sender(self) -> str:
        """The address a recipient recognises: the From header's, else the envelope sender."""
        address = parseaddr(self.from_header or "")[1]
        return (address if "@" in address else self.mail_from or "").lower()


def blob_key(message_id: str, recipient: str) -> str:
    return f"spamq/{message_id}/{recipient.lower()}"


class SpamStoreUnavailable(RuntimeError):
    """No spam store in this runtime: a copy to be held cannot be; the message is held instead."""


def hold(ctx: MessageContext, services: Services, recipient: str, data: bytes) -> str:
    """Keep `data` (this recipient's finished copy) instead of delivering it. Idempotent: a
    re-run stores the same key and keeps the first record (and whether a digest listed it)."""
    store = services.spam
    if store is None:
        raise SpamStoreUnavailable("no spam quarantine store in this runtime")
    from mailmoat.message import header_text

    tenant = services.tenant(ctx)
    now = services.clock.now()
    key = blob_key(ctx.id, recipient)
    services.blobs.put(key, data)
    date = header_text(ctx.parsed.message, "date") if ctx.parsed is not None else None
    store.save(HeldMessage(
        message_id=ctx.id, recipient=recipient.lower(), tenant=tenant.name, held_at=now,
        expires_at=now + timedelta(days=tenant.retention_days), blob_key=key,
        mail_from=ctx.envelope.mail_from, from_header=_short(ctx.from_header),
        subject=_short(ctx.subject), date=_short(date), score=ctx.spam.score,
        sources=list(ctx.spam.sources)))
    log.info("spam copy held", extra={"message_id": ctx.id, "tenant": tenant.name,
                                      "action": "quarantine"})
    return QUARANTINED_OUTCOME


def _short(value: str | None, limit: int = 500) -> str | None:
    return None if value is None else " ".join(value.split())[:limit]


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    status: str  # released | already | unknown | retry | failed | in-doubt
    outcome: str = ""


def release(services: Services, message_id: str, recipient: str, *, by: str = "link",
            now: datetime | None = None) -> ReleaseResult:
    """Deliver a held copy as stored, at most once (the message log's delivery claim)."""
    store = services.spam
    recipient = recipient.lower()
    held = store.get(message_id, recipient) if store is not None else None
    if store is None or held is None:
        return ReleaseResult("unknown")
    now = now or services.clock.now()
    logbook = services.log
    done = logbook.delivery_outcome(message_id, recipient)
    if held.state == RELEASED or (Outcome.of(done) is Outcome.DELIVERED):
        if held.state != RELEASED:
            store.mark_released(message_id, recipient, now, by)
        return ReleaseResult("already", done or "")
    if held.expires_at <= now:
        return ReleaseResult("unknown")
    tenant = services.config.tenant(held.tenant)
    mailer = services.mailer_for(tenant)
    idempotent = getattr(mailer, "idempotent", False)
    if not logbook.claim_delivery(message_id, recipient) and not idempotent:
        return ReleaseResult("in-doubt", "another release holds the delivery claim")
    data = services.blobs.get(held.blob_key)
    try:
        where = mailer.deliver(message_id, recipient, held.mail_from, data)
    except DeliveryError as exc:
        if exc.maybe_delivered and not idempotent:
            outcome = f"held: may already be delivered ({exc})"[:300]
            logbook.finish_delivery(message_id, recipient, outcome)
            return ReleaseResult("in-doubt", outcome)
        outcome = f"{'failed' if exc.permanent else 'deferred'}: {exc}"[:300]
        if exc.permanent:
            logbook.finish_delivery(message_id, recipient, outcome)
            return ReleaseResult("failed", outcome)
        logbook.release_delivery(message_id, recipient)  # nothing sent: a later click may retry
        return ReleaseResult("retry", outcome)
    outcome = f"delivered: {where} (released from spam quarantine)"
    logbook.finish_delivery(message_id, recipient, outcome)
    store.mark_released(message_id, recipient, now, by)
    _record_in_message_log(services, message_id, recipient, outcome)
    log.info("spam copy released", extra={"message_id": message_id, "tenant": held.tenant,
                                          "action": f"release:{by}"})
    return ReleaseResult("released", outcome)


def _record_in_message_log(services: Services, message_id: str, recipient: str,
                           outcome: str) -> None:
    """The message's log row says what happened to every recipient, including a release."""
    record = services.log.get(message_id)
    if record is None:
        return
    report = dict(record.report or {})
    deliveries = dict(report.get("deliveries") or {})
    for rcpt in list(deliveries):
        if rcpt.lower() == recipient:
            del deliveries[rcpt]
    deliveries[recipient] = outcome
    report["deliveries"] = deliveries
    fields: dict[str, object] = {"report": report}
    if record.state == MessageState.QUARANTINED:
        fields["state"] = MessageState.DELIVERED
    services.log.update(message_id, **fields)


def allow_sender_and_release(services: Services, message_id: str, recipient: str, *,
                             now: datetime | None = None) -> ReleaseResult:
    """Add the held message's sender to this recipient's allow list, then release it."""
    store = services.spam
    held = store.get(message_id, recipient.lower()) if store is not None else None
    if store is None or held is None:
        return ReleaseResult("unknown")
    now = now or services.clock.now()
    if held.sender:
        store.allow_sender(recipient.lower(), held.sender, now)
    return release(services, message_id, recipient, by="allow-sender", now=now)


def sweep(services: Services, now: datetime) -> int:
    """Forget held copies past their tenant's retention: blob and record."""
    store = services.spam
    if store is None:
        return 0
    gone = 0
    for held in store.expired(now):
        services.blobs.delete(held.blob_key)
        store.delete(held.message_id, held.recipient)
        gone += 1
    return gone
