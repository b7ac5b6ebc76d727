"""Non-delivery notices (RFC 3464 DSNs) for mail the recipient's host refused for good.

We accepted the message with 250, so when delivery later fails permanently the sender must
hear about it (RFC 5321 §6.1) — but only a sender this message proves to be real. Bouncing to
a forged reverse path is backscatter: spam delivered by us to an innocent third party. So a
DSN goes out only when the envelope sender's domain authenticated the message (SPF pass for
that domain, or a passing DKIM signature aligned with it), never for the null reverse path,
never to MAILER-DAEMON, never for a spam verdict. Everything else is recorded, not bounced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from mailmoat.auth.dmarc import organizational_domain
from mailmoat.pipeline import Services, header_block_size
from mailmoat.ports import DeliveryError

if TYPE_CHECKING:
    from mailmoat.context import MessageContext

log = logging.getLogger("mailmoat.bounce")

# The returned header block is bounded: the sender needs to recognise the message, no more.
RETURNED_HEADERS_MAX = 16 * 1024
_NEVER_BOUNCE_TO = frozenset({"mailer-daemon"})


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient the message could not be delivered to, as the remote host said it."""

    recipient: str
    status: str  # RFC 3463 enhanced status, e.g. 5.1.1
    diagnostic: str  # the remote reply, e.g. "550 5.1.1 user unknown"


def sender_is_authenticated(ctx: MessageContext) -> bool:
    """True when the envelope sender's domain vouched for this message (SPF or aligned DKIM)."""
    mail_from = (ctx.envelope.mail_from or "").strip().lower()
    local, at, domain = mail_from.rpartition("@")
    if not at or not local or not domain or local in _NEVER_BOUNCE_TO:
        return False
    spf = ctx.auth.details.get("spf") or {}
    if spf.get("result") == "pass" and str(spf.get("domain", "")).lower() == domain:
        return True
    sender_org = organizational_domain(domain)
    for signature in ctx.auth.details.get("dkim") or []:
        signer = str(signature.get("domain") or "").lower()
        if signature.get("result") == "pass" and signer and organizational_domain(signer) == sender_org:
            return True
    return False


def status_of(exc: DeliveryError) -> str:
    """The enhanced status code from the reply text when the host gave one (550 5.1.1 …)."""
    text = str(exc)
    for word in text.replace("'", " ").replace('"', " ").split():
        parts = word.strip(".,;()").split(".")
        if len(parts) == 3 and parts[0] in {"4", "5"} and all(p.isdigit() for p in parts):
            return ".".join(parts)
    return "5.0.0" if exc.permanent else "4.0.0"


def notify_sender(ctx: MessageContext, services: Services, failures: list[Failure]) -> None:
    """Send one DSN for these failures when the sender is authenticated; record it either way.

    At most once per message and recipient set: the claim is taken in the message log under a
    `dsn:` key, so a re-run of the deliver stage does not bounce twice."""
    if not failures:
        return
    names = ", ".join(f.recipient for f in failures)
    if ctx.spam.verdict == "spam":
        ctx.add("DSN_SUPPRESSED", "message", f"spam verdict; no notice for {names}")
        return
    if not sender_is_authenticated(ctx):
        ctx.add("DSN_SUPPRESSED", "message",
                f"sender {ctx.envelope.mail_from or '<>'} not authenticated; no notice for {names}")
        return
    sender = str(ctx.envelope.mail_from)
    key = "dsn:" + ",".join(sorted(f.recipient.lower() for f in failures))
    if not services.log.claim_delivery(ctx.id, key):
        return  # sent (or being sent) by an earlier run
    notices = services.notices
    if notices is None:
        services.log.finish_delivery(ctx.id, key, "failed: no outbound path for notices")
        ctx.add("DSN_FAILED", "message", "no outbound path for notices is configured")
        return
    tenant = services.tenant(ctx)
    dsn = build_dsn(ctx, failures, reporting_mta=services.settings.smtp_hostname,
                    postmaster=services.settings.postmaster, now=services.clock.now(),
                    language=tenant.language)
    try:
        where = notices.deliver(ctx.id, sender, None, dsn)
    except DeliveryError as exc:
        # A notice is best effort: one attempt per host, then recorded. It never holds the
        # message, whose own fate (failed) is already decided.
        services.log.finish_delivery(ctx.id, key, f"failed: {exc}"[:300])
        ctx.add("DSN_FAILED", "message", f"to {sender}: {exc}"[:300])
        log.warning("DSN not sent", extra={"message_id": ctx.id})
        return
    services.log.finish_delivery(ctx.id, key, f"delivered: {where}")
    ctx.add("DSN_SENT", "message", f"to {sender} for {names}")


_TEXT = {
    "ja": ("配信できませんでした / Undelivered mail returned to sender",
           "このメッセージは次の宛先に配信できませんでした。宛先のメールサーバーが受け取りを拒否しました。\n"
           "This message could not be delivered to the recipients below: their mail server refused it.\n"),
    "en": ("Undelivered mail returned to sender / 配信できませんでした",
           "This message could not be delivered to the recipients below: their mail server refused it.\n"
           "このメッセージは次の宛先に配信できませんでした。宛先のメールサーバーが受け取りを拒否しました。\n"),
}


def build_dsn(ctx: MessageContext, failures: list[Failure], *, reporting_mta: str, postmaster: str,
              now: datetime, language: str = "ja") -> bytes:
    """multipart/report; report-type=delivery-status (RFC 3464, RFC 6522), null-sender ready."""
    subject, intro = _TEXT.get(language, _TEXT["en"])
    lines = [intro]
    for f in failures:
        lines.append(f"  <{f.recipient}>: {f.diagnostic}")
    if ctx.subject:
        lines.append(f"\nSubject: {ctx.subject}")
    if ctx.message_id:
        lines.append(f"Message-ID: {ctx.message_id}")

    report = EmailMessage(policy=policy.SMTP)
    report["From"] = f"Mail Delivery System <{postmaster}>"
    report["To"] = str(ctx.envelope.mail_from)
    report["Subject"] = subject
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-reply loops
    if ctx.message_id:
        report["In-Reply-To"] = ctx.message_id
        report["References"] = ctx.message_id
    report.set_content("\n".join(lines) + "\n", charset="utf-8")
    report.make_mixed()
    report.replace_header("Content-Type", "multipart/report; report-type=delivery-status")
    report.set_boundary(f"dsn-{ctx.id}")

    status = Message(policy=policy.SMTP)
    status.set_type("message/delivery-status")
    per_message = Message(policy=policy.SMTP)
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["X-Mailmoat-Queue-ID"] = ctx.id
    per_message["Arrival-Date"] = format_datetime(now)
    blocks = [per_message]
    for f in failures:
        block = Message(policy=policy.SMTP)
        block["Final-Recipient"] = f"rfc822; {f.recipient}"
        block["Action"] = "failed"
        block["Status"] = f.status
        block["Diagnostic-Code"] = f"smtp; {_one_line(f.diagnostic)}"
        blocks.append(block)
    status.set_payload(blocks)  # type: ignore[arg-type]  # a list of header blocks, per RFC 3464
    report.attach(status)  # type: ignore[arg-type]

    headers = EmailMessage(policy=policy.SMTP)
    returned = ctx.raw[:min(header_block_size(ctx.raw), RETURNED_HEADERS_MAX)].decode("utf-8", "replace")
    headers.set_content(returned, subtype="rfc822-headers", charset="utf-8", cte="8bit")
    del headers["MIME-Version"]
    report.attach(headers)
    return report.as_bytes()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]
