"""Spam detection: ask every configured verdict source, record findings, set ctx.spam.

Sources: SES's X-SES-Spam-Verdict (AWS), DNS blocklists on the connecting IP, domain
blocklists on the body's URL domains, and rspamd when MAILMOAT_RSPAMD_URL is set. Any source
saying spam makes the verdict spam; at least one clean answer and no spam makes it ham; no
answer at all (nothing configured, or every source failed) leaves it unknown. A failed source
is a finding (SPAM_CHECK_FAILED), never silent, and never makes a message spam by itself.

Detection only: what happens to each recipient's copy is policy.decide()'s job. The
recipients' own settings (filter on/off, allowed senders) are read here because this stage
has the directory at hand; they are recorded as facts ("on", "off", "allowed").
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from mailmoat.spam import dnsbl

if TYPE_CHECKING:
    from mailmoat.context import MessageContext
    from mailmoat.pipeline import Services

log = logging.getLogger("mailmoat.spam")

DNSBL_SECONDS = 10.0  # all blocklist queries of one message together


def detect(ctx: MessageContext, services: Services) -> None:
    settings = services.settings
    spam = ctx.spam
    said_spam: list[str] = []
    answered = 0

    # SES (only where SES wrote the header: the sender could write it anywhere else) -------
    trust_ses = settings.ses_spam_verdict is True  # the composition root decides the default
    ses_verdict = ctx.auth.upstream.get("spam")
    if trust_ses and ses_verdict:
        spam.checks["ses"] = ses_verdict
        if ses_verdict == "fail":
            said_spam.append("ses")
            ctx.add("SES_SPAM", "message", "X-SES-Spam-Verdict: FAIL")
        if ses_verdict in ("pass", "fail"):
            answered += 1

    # DNS blocklists --------------------------------------------------------------------------
    deadline = time.monotonic() + DNSBL_SECONDS
    ip_zones = [dnsbl.Zone.parse(z) for z in settings.dnsbl_ip_zones if z.strip()]
    ip = dnsbl.listable_ip(ctx.envelope.client_ip)
    if ip_zones and ip:
        outcome = dnsbl.check_ip(services.resolver, ip, ip_zones, deadline=deadline)
        answered += _record(ctx, outcome, "dnsbl", said_spam)
    domain_zones = [dnsbl.Zone.parse(z) for z in settings.dnsbl_domain_zones if z.strip()]
    if domain_zones:
        domains, total = dnsbl.url_domains(_body_texts(ctx), settings.dnsbl_max_domains)
        if total > len(domains):
            ctx.add("URL_DOMAIN_LIMIT", "message",
                    f"{total} URL domains, the first {len(domains)} checked")
        if domains:
            outcome = dnsbl.check_domains(services.resolver, domains, domain_zones,
                                          deadline=deadline)
            answered += _record(ctx, outcome, "uribl", said_spam)

    # rspamd ------------------------------------------------------------------------------------
    if settings.rspamd_url:
        answered += _ask_rspamd(ctx, services, said_spam)

    spam.sources = list(dict.fromkeys(said_spam))
    if spam.sources:
        spam.verdict = "spam"
    elif answered:
        spam.verdict = "ham"
    else:
        spam.verdict = "unknown"
    if spam.verdict == "spam":
        _recipient_settings(ctx, services)


def _record(ctx: MessageContext, outcome: dnsbl.Outcome, kind: str, said_spam: list[str]) -> int:
    for symbol, detail in outcome.findings:
        ctx.add(symbol, "message", detail)
    for listing in outcome.listed:
        said_spam.append(f"{kind}:{listing.zone}")
        ctx.spam.checks[f"{kind}:{listing.zone}"] = f"listed {listing.subject} {','.join(listing.codes)}"
    if not outcome.listed and outcome.answered:
        ctx.spam.checks[kind] = "not listed"
    return 1 if outcome.answered else 0


def _body_texts(ctx: MessageContext) -> list[str]:
    if ctx.parsed is None:
        return []
    texts: list[str] = []
    for part in ctx.parsed.parts:
        if part.kind == "body" and part.content_type in ("text/plain", "text/html"):
            try:
                texts.append(part.text())
            except Exception:  # an undecodable part has no URLs we could read either
                log.debug("body part unreadable for URL domains", extra={"message_id": ctx.id})
    return texts


def _ask_rspamd(ctx: MessageContext, services: Services, said_spam: list[str]) -> int:
    from mailmoat.spam.rspamd import RspamdError, client_for

    settings = services.settings
    assert settings.rspamd_url is not None
    envelope = ctx.envelope
    try:
        verdict = client_for(settings.rspamd_url, settings.rspamd_timeout).check(
            ctx.raw, client_ip=envelope.client_ip, helo=envelope.helo,
            mail_from=envelope.mail_from, rcpts=list(envelope.rcpt_to), queue_id=ctx.id)
    except RspamdError as exc:
        log.warning("rspamd check failed", extra={"message_id": ctx.id, "stage": "authenticate",
                                                  "symbol": "SPAM_CHECK_FAILED"})
        ctx.add("SPAM_CHECK_FAILED", "message", f"rspamd: {exc}"[:300])
        ctx.spam.checks["rspamd"] = "failed"
        return 0
    ctx.spam.checks["rspamd"] = f"{verdict.action} {verdict.score}"
    ctx.spam.score = verdict.score
    if verdict.verdict == "spam":
        said_spam.append("rspamd")
        ctx.add("RSPAMD_SPAM", "message",
                f"{verdict.action} score={verdict.score}/{verdict.required_score} "
                f"{','.join(verdict.symbols[:10])}"[:300])
    return 1 if verdict.verdict in ("spam", "ham") else 0


def _recipient_settings(ctx: MessageContext, services: Services) -> None:
    """Each recipient's filter switch and own allowed senders, as facts for the decision."""
    from mailmoat.policy import authenticated_senders, sender_matches

    store = services.spam
    senders = authenticated_senders(ctx)
    for rcpt in dict.fromkeys(r.lower() for r in ctx.envelope.rcpt_to):
        recipient = services.directory.recipient(rcpt)
        if recipient is not None and not recipient.spam_filter:
            ctx.spam.recipients[rcpt] = "off"
            continue
        allowed = store.allowed_senders(rcpt) if store is not None else []
        # Only an identity a check vouched for; and mail that failed authentication may be
        # anyone's whatever else passed.
        if allowed and not ctx.auth.warn and any(sender_matches(s, allowed) for s in senders):
            ctx.spam.recipients[rcpt] = "allowed"
            continue
        ctx.spam.recipients[rcpt] = "on"
