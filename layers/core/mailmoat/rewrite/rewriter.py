"""What the rewrite stage does to one message, in order: body actions, our headers, the ARC seal."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

from mailmoat.config import TenantConfig
from mailmoat.context import MessageContext
from mailmoat.headerform import with_modern_field_names
from mailmoat.loop import trace_header
from mailmoat.message import WalkLimits
from mailmoat.rewrite.banner import BannerFacts, build_banner, failure_reasons
from mailmoat.rewrite.body import BodyPlan, is_signed_or_encrypted, rewrite_body
from mailmoat.rewrite.defang import portal_links
from mailmoat.rewrite.headers import (
    RawMessage,
    our_results_field,
    prefix_subject,
    remove_claims_of,
    remove_unreadable_results,
    spam_headers,
)
from mailmoat.rewrite.seal import ArcKey, SealError, ensure_local_key, load_key, seal_parts
from mailmoat.settings import Settings
from mailmoat.smtp_text import crlf_normalised

_CR_LF = re.compile(rb"\r\n?")  # CRLF, and a bare CR


@dataclass(frozen=True, slots=True)
class SpamMark:
    """Spam headers for one copy: X-Spam-Flag/-Status/-Score, and for a tagged copy the
    tenant's subject prefix. A held (quarantined) copy carries the headers without the prefix,
    so a released message says why it was held without a changed subject."""

    score: float | None
    subject_prefix: str = ""


_FROM_ACTIONS = SpamMark(None, "\0")  # sentinel: derive the mark from ctx.actions


def spam_mark(ctx: MessageContext, tenant: TenantConfig, recipient: str) -> SpamMark | None:
    treatment = ctx.spam.treatment(recipient)
    if treatment == "tag":
        return SpamMark(ctx.spam.score, tenant.spam_subject_prefix)
    if treatment == "quarantine":
        return SpamMark(ctx.spam.score)
    return None


@dataclass(slots=True)
class RewriteResult:
    data: bytes
    actions: list[str] = field(default_factory=list)  # carried out, for ctx.actions
    findings: list[tuple[str, str]] = field(default_factory=list)  # (symbol, detail)


def arc_key(settings: Settings) -> ArcKey:
    """The configured key; locally, without one, a key generated once under the data directory."""
    if settings.arc_key_file is not None:
        return load_key(settings.arc_key_file)
    if not settings.generate_keys:
        raise SealError("no ARC key configured (MAILMOAT_ARC_KEY_FILE)")
    return ensure_local_key(settings.data_dir / "arc", settings.arc_selector, arc_domain(settings))


def arc_domain(settings: Settings) -> str:
    return settings.arc_domain or settings.smtp_hostname


def _domain_of(header: str | None) -> str | None:
    address = parseaddr(header or "")[1]
    return address.rpartition("@")[2].lower() or None if "@" in address else None


def _consistent_newlines(data: bytes | memoryview, linesep: bytes) -> bytes | memoryview:
    """Mixed CRLF / LF / bare CR input comes out with one line separator throughout: the seal
    then covers the very bytes that go out (outbound paths give bare CR and LF a CRLF). The
    same object (a view stays a view) when there is nothing to change."""
    if linesep == b"\r\n":
        return crlf_normalised(data)  # the outbound paths' own rule (mailmoat.smtp_text)
    return _CR_LF.sub(b"\n", data) if _CR_LF.search(data) is not None else data


def rewrite(ctx: MessageContext, settings: Settings, tenant: TenantConfig,
            template_dirs: list[Path] | None = None, *,
            source: bytes | None = None, spam: SpamMark | None = _FROM_ACTIONS) -> RewriteResult:
    """The delivered bytes for `ctx` (or for `source`, one recipient's copy): body actions
    first, then our headers, then the seal (which must see our Authentication-Results).
    `spam` marks the copy as spam; by default every copy is marked when the actions say
    "x-spam-flag". Raises on any failure: the stage holds."""
    if spam is _FROM_ACTIONS:
        spam = SpamMark(ctx.spam.score, tenant.spam_subject_prefix) \
            if "x-spam-flag" in ctx.actions else None
    if source is None:
        source = ctx.output if ctx.output is not None else ctx.raw
    # `Subject : x` (RFC 5322 §4.5) goes out as `Subject: x`: every reader after us, dkimpy
    # verifying our seal included, then parses what we sealed (mailmoat.headerform).
    source = with_modern_field_names(source)
    result = RewriteResult(data=source)
    want_banner = "banner" in ctx.actions
    want_defang = "defang" in ctx.actions
    want_text = "html-to-text" in ctx.actions or tenant.html_to_text

    plan = BodyPlan(defang=want_defang, html_to_text=want_text,
                    keep_link=portal_links(settings.portal_url))
    signed = (want_banner or want_defang or want_text) and is_signed_or_encrypted(source)
    if signed and (want_defang or want_text):
        result.findings.append(("SMIME_NOT_MODIFIED", "signed or encrypted content left as sent"))
    if want_banner:
        dirs = template_dirs if template_dirs is not None else [
            settings.data_dir / "templates" / tenant.name]
        plan.banner = build_banner(BannerFacts(
            sender=ctx.from_header or "", reasons=failure_reasons(ctx.auth),
            links_disabled=want_defang and not signed, language=tenant.language), dirs)
    limits = WalkLimits(max_parts=settings.limits.max_parts, max_depth=settings.limits.max_depth)
    outcome = rewrite_body(source, plan, limits)
    result.actions.extend(outcome.done)

    message = RawMessage.split(outcome.data if outcome.data is not None else source)
    removed = remove_claims_of(message, settings.authserv_id)
    if removed:
        result.findings.append(("SPOOFED_RESULTS_REMOVED", f"{removed} header(s) claimed ours"))
    if unreadable := remove_unreadable_results(message):
        result.findings.append(("AUTH_RESULTS_UNREADABLE", f"{unreadable} non-UTF-8 header(s) removed"))
    linesep = message.linesep.decode("ascii")
    if spam is not None:
        if spam.subject_prefix and prefix_subject(message, spam.subject_prefix, ctx.subject):
            result.actions.append("subject-prefix")
        message.prepend(spam_headers(spam.score))
    has_chain = message.has_arc_chain()
    # arc_sign needs our arc= result to agree with the message: "none" when there is no
    # chain; a chain the authenticate stage did not validate is not trusted (fail).
    arc_result = "none"
    if has_chain:
        arc_result = ctx.auth.arc if ctx.auth.arc in ("pass", "fail") else "fail"
    dkim_domain = ctx.auth.details.get("dkim_domain")
    results_field = our_results_field(
        settings.authserv_id, ctx.auth, mail_from=ctx.envelope.mail_from,
        header_from_domain=_domain_of(ctx.from_header),
        dkim_domain=dkim_domain if isinstance(dkim_domain, str) else None, arc_result=arc_result,
        linesep=linesep)
    # Our trace: a copy that comes back to us (a routing loop) is known by it (mailmoat.loop).
    message.prepend([results_field, trace_header(settings, ctx.id)])
    # The fields and the rest separately: the rest is still a view of the source, and the
    # sealed message is the one copy made of it (a 25 MB message is held twice, not four
    # times). Every field ends in a line ending, so the two parts are made consistent apart.
    fields = bytes(_consistent_newlines(b"".join(message.fields), message.linesep))
    rest = _consistent_newlines(message.rest, message.linesep)
    key = arc_key(settings)
    result.data = seal_parts(fields, rest, key, selector=settings.arc_selector,
                             domain=arc_domain(settings), authserv_id=settings.authserv_id,
                             linesep=message.linesep)
    result.actions.append("arc-seal")
    return result


def rewrite_copies(ctx: MessageContext, settings: Settings,
                   tenant: TenantConfig) -> tuple[RewriteResult, dict[str, bytes]]:
    """The rewrite for ctx.output and for every recipient whose copy differs: their own portal
    link (isolate) or their own spam treatment (tagged, held, or untouched when their filter is
    off). Each distinct (source, spam mark) is rewritten once."""
    recipients = list(dict.fromkeys(r.lower() for r in ctx.envelope.rcpt_to))
    marks = {r: spam_mark(ctx, tenant, r) for r in recipients}
    base_source = ctx.output if ctx.output is not None else ctx.raw
    first = recipients[0] if recipients else ""
    base_mark = marks[first] if recipients else spam_mark(ctx, tenant, "")
    result = rewrite(ctx, settings, tenant, spam=base_mark)
    if len(set(marks.values())) <= 1:
        # One treatment for all: only the isolate stage's per-recipient copies differ.
        outputs = {rcpt: result.data if data is ctx.output else
                   rewrite(ctx, settings, tenant, source=data, spam=base_mark).data
                   for rcpt, data in ctx.outputs.items()}
        return result, outputs
    done: dict[tuple[int, SpamMark | None], bytes] = {(id(base_source), base_mark): result.data}
    outputs = {}
    for rcpt in recipients:
        source = ctx.outputs.get(rcpt, base_source)
        key = (id(source), marks[rcpt])
        if key not in done:
            copy = rewrite(ctx, settings, tenant, source=source, spam=marks[rcpt])
            done[key] = copy.data
            result.actions.extend(a for a in copy.actions if a not in result.actions)
        outputs[rcpt] = done[key]
    return result, outputs
