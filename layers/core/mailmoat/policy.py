"""The one decision step: findings + tenant policy → message disposition and attachment actions."""

from __future__ import annotations

from mailmoat.config import RuleConfig, TenantConfig
from mailmoat.context import AttachmentAction, Disposition, MessageContext, Verdict

# A message whose structure we could not walk to the end is never delivered as is.
_UNSCANNABLE = frozenset({"MIME_LIMIT", "MIME_PARSE_FAILED", "HEADER_LIMIT"})

_RULE_ACTIONS = {"isolate": AttachmentAction.ISOLATE, "delete": AttachmentAction.DELETE,
                 "keep": AttachmentAction.KEEP, "remove-macros": AttachmentAction.CONVERT,
                 "convert-pdf": AttachmentAction.CONVERT}

# Verdicts that keep a file out of the delivered message in the default ("risky") mode.
_ISOLATED_VERDICTS = frozenset({Verdict.RISKY, Verdict.ENCRYPTED, Verdict.UNSUPPORTED,
                                Verdict.ANALYSING})


def _sender_matches(sender: str | None, patterns: list[str]) -> bool:
    if not sender:
        return False
    sender = sender.lower()
    domain = sender.rpartition("@")[2]
    for pattern in patterns:
        p = pattern.lower().strip()
        if p in (sender, domain) or (p.startswith("@") and p[1:] == domain):
            return True
    return False


sender_matches = _sender_matches  # the per-recipient allow lists match the same way


def authenticated_senders(ctx: MessageContext) -> list[str]:
    """The sender addresses a check vouched for, the only ones an allow-list may match: the
    envelope sender when SPF passed; the From address (one, not a list) when DMARC passed or,
    with no DMARC verdict, a passing DKIM signature or SPF's domain is aligned with it. Without
    this rule anyone names an allowed boss@bank.example in From (no DMARC record there), sends
    from a domain of their own that SPF-passes, and skips the spam filter."""
    from email.utils import getaddresses

    from mailmoat.auth.dmarc import aligned

    senders: list[str] = []
    mail_from = (ctx.envelope.mail_from or "").lower()
    spf = ctx.auth.details.get("spf") or {}
    if ctx.auth.spf == "pass" and "@" in mail_from:
        senders.append(mail_from)
    addresses = [a.lower() for _, a in getaddresses([ctx.from_header or ""]) if "@" in a]
    if len(addresses) != 1:
        return senders
    from_address = addresses[0]
    from_domain = from_address.rpartition("@")[2]
    dkim_domains = [s.get("domain", "") for s in ctx.auth.details.get("dkim") or []
                    if isinstance(s, dict) and s.get("result") == "pass"]
    spf_domain = spf.get("domain", "") if isinstance(spf, dict) else ""
    vouched = ctx.auth.dmarc == "pass" or (
        ctx.auth.dmarc in ("none", "pass")
        and (any(aligned(d, from_domain, "r") for d in dkim_domains)
             or (ctx.auth.spf == "pass" and aligned(spf_domain, from_domain, "r"))))
    if vouched and from_address not in senders:
        senders.append(from_address)
    return senders


# What detection recorded per recipient (spam/detect.py) that takes the spam action.
_FILTERED = frozenset({"on", "tag", "quarantine"})


def _decide_spam(ctx: MessageContext, tenant: TenantConfig, *, tenant_allowed: bool) -> None:
    """Spam is decided per recipient: one with the filter off, or who allowed the sender, gets
    the message untouched by it; the others get the tenant's action (tag or quarantine, the
    copy then held at delivery). `spam.action` is the tenant's action when anyone got it."""
    action = tenant.spam_action
    recipients = list(dict.fromkeys(r.lower() for r in ctx.envelope.rcpt_to))
    if tenant_allowed:
        ctx.spam.recipients = {r: "allowed" for r in recipients}
        ctx.spam.action = "none"
        return
    applied: set[str]
    if not recipients:  # analysed without an envelope: the message-level action
        applied = {action}
    else:
        for rcpt in recipients:
            if ctx.spam.recipients.get(rcpt, "on") in _FILTERED:
                ctx.spam.recipients[rcpt] = action
        applied = {t for t in ctx.spam.recipients.values() if t in ("tag", "quarantine")}
    ctx.spam.action = action if applied else "none"
    if "tag" in applied:
        ctx.add_action("x-spam-flag")
    if "quarantine" in applied:
        ctx.add_action("spam-quarantine")


def attachment_action(verdict: Verdict, symbols: list[str], tenant: TenantConfig) -> AttachmentAction:
    if verdict == Verdict.DANGER:
        return AttachmentAction.DELETE
    if "SCAN_FAILED" in symbols:  # fail closed: an unchecked file is not handed over
        return AttachmentAction.ISOLATE
    if tenant.isolation == "all" or verdict in _ISOLATED_VERDICTS:
        return AttachmentAction.ISOLATE
    return AttachmentAction.KEEP


def decide(ctx: MessageContext, tenant: TenantConfig) -> None:
    """Turn what detection found into actions. Transform stages only carry these out."""
    if ctx.disposition == Disposition.HELD:
        return
    if ctx.has("ROUTING_LOOP"):
        # Delivered again it would only come back again: it stays with us, held and visible to
        # the admin, whose fix is the route (the tenant's routing_domain). Its stored copy
        # carries our trace header, so a re-drive holds it again.
        ctx.hold("ROUTING_LOOP: the message has already been through this gateway")
        return
    unscannable = sorted({f.symbol for f in ctx.findings if f.symbol in _UNSCANNABLE})
    if unscannable:
        ctx.add("UNSCANNABLE", "message", ", ".join(unscannable))
        ctx.disposition = Disposition.QUARANTINE
    sender = ctx.envelope.mail_from
    allowed = False
    vouched = next((s for s in authenticated_senders(ctx) if _sender_matches(s, tenant.allowed_senders)),
                   None)
    if _sender_matches(sender, tenant.blocked_senders):
        # Blocking needs no proof: whoever claims the address is refused.
        ctx.add("BLOCKED_SENDER", "message", sender or "")
        ctx.disposition = Disposition.QUARANTINE
    elif vouched is not None:
        ctx.add("ALLOWED_SENDER", "message", vouched)
        allowed = True
    if ctx.spam.verdict == "spam" and ctx.disposition == Disposition.DELIVER:
        _decide_spam(ctx, tenant, tenant_allowed=allowed)
    for att in ctx.attachments:
        att.action = attachment_action(att.verdict, att.symbols, tenant)
        # Custom rules, first match wins; they never let a danger file through, nor keep a
        # file no scanner could check or one still in the sandbox.
        rule = next((r for r in tenant.rules if r.action in _RULE_ACTIONS
                     and rule_matches(r, ctx, size=att.size)), None)
        if rule is not None and att.verdict != Verdict.DANGER and not (
                rule.action == "keep" and ("SCAN_FAILED" in att.symbols
                                           or att.verdict == Verdict.ANALYSING)):
            att.action = _RULE_ACTIONS[rule.action]
            att.conversion = rule.action if att.action == AttachmentAction.CONVERT else None
            ctx.add("CUSTOM_RULE", att.path, rule.name)
    if ctx.auth.warn:
        ctx.add_action("banner")
    if ctx.auth.defang or tenant.defang_all_links:
        ctx.add_action("defang")
    if tenant.html_to_text or any(r.action == "html-to-text" and rule_matches(r, ctx)
                                  for r in tenant.rules):
        ctx.add_action("html-to-text")
    if any(a.action != AttachmentAction.KEEP for a in ctx.attachments):
        ctx.add_action("isolate")


def rule_matches(rule: RuleConfig, ctx: MessageContext, size: int | None = None) -> bool:
    """A custom rule's conditions, ANDed: sender, size (the message's unless given), countries."""
    if rule.sender and not _sender_matches(ctx.envelope.mail_from, rule.sender):
        return False
    size = len(ctx.raw) if size is None else size
    if rule.min_size is not None and size < rule.min_size:
        return False
    if rule.max_size is not None and size > rule.max_size:
        return False
    return not rule.countries or bool({h.country for h in ctx.route if h.country}
                                      & {c.upper() for c in rule.countries})
