"""Stage 3: decide what happens to each attachment, move isolated files to the portal, add the notice."""

from __future__ import annotations

import base64
import email.message
import html
import logging
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import encode_rfc2231
from typing import TYPE_CHECKING

from mailmoat.config import TenantConfig
from mailmoat.context import (
    AttachmentAction,
    AttachmentReport,
    Disposition,
    MessageContext,
    Verdict,
)
from mailmoat.isolation import (
    IsolatedFile,
    PortalMessage,
    blob_key,
    expiry,
    issue_token,
)
from mailmoat.message import Part, WalkLimits, header_text, parse_bytes, walk
from mailmoat.pipeline import Services, register
from mailmoat.policy import decide
from mailmoat.states import Outcome

if TYPE_CHECKING:
    from mailmoat.rewrite.banner import Banner

log = logging.getLogger("mailmoat.isolate")

_TEXT_KINDS = frozenset({"text/plain", "text/html"})
_MAX_NODES = 20_000  # the walk already bounded the tree; this only guards the parent map
_MAX_NAME = 120

# The product's Japanese wording is the model (issue 5); English follows it.
NOTICE: dict[str, dict[str, str]] = {
    "ja": {
        "title": "【添付ファイルの分離】",
        "isolated": "添付ファイルはセキュリティポリシーにより分離されました。"
                    "以下のURLから確認してください（有効期限 {days} 日）。",
        "deleted": "以下の添付ファイルは危険と判定されたため削除されました。",
        "converted": "以下の添付ファイルはマクロを削除して添付しています。"
                     "元のファイルは以下のURLから確認できます（有効期限 {days} 日）。",
        "pdf": "以下の添付ファイルは安全のため PDF に変換して添付しています。"
               "元のファイルは以下のURLから確認できます（有効期限 {days} 日）。",
        "virus": "ウイルスを検出",
        "danger": "危険なファイル",
        "link": "添付ファイルを確認する",
        "details": "詳細は以下のURLから確認できます（有効期限 {days} 日）。",
    },
    "en": {
        "title": "[Attachments isolated]",
        "isolated": "Attachments were separated from this message by security policy. "
                    "Check them at the URL below (valid for {days} days).",
        "deleted": "The following attachments were judged dangerous and have been deleted.",
        "converted": "The following attachments are attached with their macros removed. "
                     "The originals are at the URL below (valid for {days} days).",
        "pdf": "The following attachments are attached converted to PDF for safety. "
               "The originals are at the URL below (valid for {days} days).",
        "virus": "virus detected",
        "danger": "dangerous file",
        "link": "Check the attachments",
        "details": "Details are at the URL below (valid for {days} days).",
    },
}
_RULE = "━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━"
_HTML = ('<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
         'style="width:100%;border-collapse:collapse;margin:0 0 16px 0;"><tr><td bgcolor="#EEF4FB" '
         'style="background-color:#EEF4FB;border:2px solid #1C5FA8;padding:10px 14px;'
         "font-family:Meiryo,'Hiragino Kaku Gothic ProN','Yu Gothic',Arial,Helvetica,sans-serif;"
         'font-size:14px;line-height:1.6;color:#1A1A1A;text-align:left;">{body}</td></tr></table>')


class IsolationError(RuntimeError):
    """The files cannot be taken out of this message safely; the stage fails closed."""


@dataclass(frozen=True, slots=True)
class _Converted:
    """A file's safe copy that replaces it in the message."""

    data: bytes
    filename: str
    content_type: str
    kind: str = "converted"  # the NOTICE line that lists it: "converted" (macros) or "pdf"


@dataclass(slots=True)
class _Removed:
    report: AttachmentReport
    deleted: bool
    converted: _Converted | None = None


class Isolate:
    name = "isolate"

    def run(self, ctx: MessageContext, services: Services) -> None:
        tenant = services.tenant(ctx)
        decide(ctx, tenant)
        pending = [a for a in ctx.attachments if a.action != AttachmentAction.KEEP]
        if ctx.disposition != Disposition.DELIVER:
            return  # a quarantined message keeps its files with it
        if pending:
            try:
                isolate(ctx, services, tenant, pending)
            except IsolationError as exc:
                # Never deliver a file the policy wants out of the message: quarantine instead.
                ctx.add("ISOLATION_UNAVAILABLE", "message",
                        f"{exc}; " + ", ".join(f"{a.path}:{a.action}" for a in pending))
                ctx.disposition = Disposition.QUARANTINE
                return
        if not ctx.beyond_limits:
            _pair_follow_up(ctx, services, tenant)


def _remember_encrypted(ctx: MessageContext, services: Services, tenant: TenantConfig,
                        files: list[IsolatedFile]) -> None:
    """Held encrypted files wait for a follow-up's password; this mail's own are tried now."""
    from mailmoat import ppap

    try:
        ppap.remember_and_try(ctx, services, tenant, files)
    except Exception as exc:  # as in _pair_follow_up: the files stay isolated, the mail goes on
        log.warning("ppap pairing failed", extra={"message_id": ctx.id, "stage": "isolate",
                                                  "symbol": "PPAP_FAILED"})
        ctx.add("PPAP_FAILED", "message", f"{type(exc).__name__}: {exc}"[:300])


def _pair_follow_up(ctx: MessageContext, services: Services, tenant: TenantConfig) -> None:
    """This mail's passwords open earlier held files (mailmoat.ppap); the mail then says so.
    Pairing is a convenience on top of isolation: when it cannot run, the files simply stay
    isolated behind the portal's password form (the closed state), and the mail goes on."""
    from mailmoat import ppap

    try:
        paired = ppap.pair_follow_up(ctx, services, tenant)
    except Exception as exc:
        log.warning("ppap pairing failed", extra={"message_id": ctx.id, "stage": "isolate",
                                                  "symbol": "PPAP_FAILED"})
        ctx.add("PPAP_FAILED", "message", f"{type(exc).__name__}: {exc}"[:300])
        return
    if not paired:
        return
    limits = WalkLimits(max_parts=services.settings.limits.max_parts,
                        max_depth=services.settings.limits.max_depth)
    note = _ppap_note([pending.filename or pending.path for pending, _ in paired], tenant)
    source = ctx.output if ctx.output is not None else ctx.raw
    try:
        ctx.output = _notice_into(source, note, limits)
        ctx.outputs = {r: _notice_into(data, note, limits) for r, data in ctx.outputs.items()}
    except IsolationError:
        return  # no place for the note: the mail goes as it is; the portal shows the file opened
    ctx.add_action("ppap-note")


def isolate(ctx: MessageContext, services: Services, tenant: TenantConfig,
            pending: list[AttachmentReport]) -> None:
    # The body-editing helpers (lxml and all) load only for messages that need a notice.
    from mailmoat.rewrite.body import serialize_tree
    from mailmoat.rewrite.headers import RawMessage

    source = ctx.output if ctx.output is not None else ctx.raw
    limits = WalkLimits(max_parts=services.settings.limits.max_parts,
                        max_depth=services.settings.limits.max_depth)
    msg, _ = parse_bytes(source)
    parsed = walk(msg, limits)
    if parsed.truncated:
        raise IsolationError("MIME tree beyond the walk limits")
    by_path = {p.path: p for p in parsed.parts}
    pending_paths = {a.path for a in pending}
    # An attached message that leaves takes its inner files with it.
    outermost = [a for a in pending if not any(a.path.startswith(p + ".") for p in pending_paths)]
    for report in pending:
        part = by_path.get(report.path)
        if part is None or part.kind not in ("attachment", "message"):
            raise IsolationError(f"part {report.path} cannot be removed")

    store = services.isolation
    if store is None:
        raise IsolationError("no isolated-file store in this deployment")
    now = services.clock.now()
    expires = expiry(now, tenant.retention_days)
    # Converted files stay in the message as their safe copy; the original goes to the portal.
    converted: dict[str, _Converted] = {}
    for report in pending:
        if report.action == AttachmentAction.CONVERT:
            done = _convert(ctx, services, tenant, report, by_path[report.path])
            if done is not None:
                converted[report.path] = done
    files = [_keep_for_portal(ctx, services, report, by_path[report.path], expires,
                              _inner_files(ctx, report, by_path))
             for report in pending]
    store.save(PortalMessage(
        id=ctx.id, tenant=tenant.name, language=tenant.language, from_header=ctx.from_header,
        subject=ctx.subject, date=header_text(parsed.message, "date"),
        mail_from=ctx.envelope.mail_from, route=[h.to_dict() for h in ctx.route],
        created_at=now, expires_at=expires), files)
    _remember_encrypted(ctx, services, tenant, files)

    for path, done in converted.items():
        _replace_file(by_path[path].node, done)
    _strip(msg, [by_path[a.path] for a in outermost if a.path not in converted])
    stripped = serialize_tree(source, msg, RawMessage.split(source).linesep)

    shown = [_Removed(a, a.action == AttachmentAction.DELETE, converted.get(a.path))
             for a in outermost]
    recipients = list(dict.fromkeys(r.lower() for r in ctx.envelope.rcpt_to)) or [""]
    base = services.settings.portal_url.rstrip("/")
    outputs: dict[str, bytes] = {}
    first_url: str | None = None
    for rcpt in recipients:
        if rcpt and store.has_token(ctx.id, rcpt) and _already_delivered(services, ctx.id, rcpt):
            continue  # a re-run: that recipient has its message and link; keep both working
        url = f"{base}/m/{issue_token(store, ctx.id, rcpt, expires)}"
        first_url = first_url or url
        outputs[rcpt] = _with_notice(stripped, shown, url, tenant, limits)
    if first_url is None:  # every recipient was done by an earlier run
        ctx.output = _with_notice(stripped, shown, None, tenant, limits)
    else:
        ctx.output = next(iter(outputs.values()))
        ctx.portal_url = first_url
    ctx.outputs = {r: data for r, data in outputs.items() if r}
    ctx.add_action("isolate")
    log.info("attachments isolated", extra={
        "message_id": ctx.id, "tenant": tenant.name, "stage": "isolate", "action": "isolate",
        "count": len(files)})


def _inner_files(ctx: MessageContext, report: AttachmentReport,
                 by_path: dict[str, Part]) -> list[AttachmentReport] | None:
    """An attached message's files (those of messages attached inside it too), whose verdicts
    its own verdict is the worst of (stages/scan.py); None for any other part."""
    part = by_path.get(report.path)
    if part is None or part.kind != "message":
        return None
    return [a for a in ctx.attachments if a.path.startswith(report.path + ".")
            and (inner := by_path.get(a.path)) is not None and inner.kind != "message"]


def _ticket(ctx: MessageContext, report: AttachmentReport) -> str | None:
    """Still in the sandbox: its ticket, so the poll job (mailmoat.sandbox_verdicts) decides it."""
    if report.action == AttachmentAction.DELETE or report.verdict != Verdict.ANALYSING:
        return None
    return next((f.detail for f in ctx.findings
                 if f.symbol == "SANDBOX_ANALYSING" and f.target == report.path and f.detail), None)


def _keep_for_portal(ctx: MessageContext, services: Services, report: AttachmentReport,
                     part: Part, expires: datetime,
                     inner: list[AttachmentReport] | None = None) -> IsolatedFile:
    """The file's record, with its original bytes stored for the portal; a deleted (danger)
    file is recorded but never kept for download.

    An attached message leaves the mail whole, so the item its recipient sees is the message,
    not the files inside it (those get records of their own too). Its verdict is the worst of
    theirs, so it cannot be decided by a ticket of its own: its `members` list each inner file
    (path, verdict, symbols) with the sandbox ticket of those still analysing, and its own
    sandbox_ticket (the first of them) only puts it in the poll job's list. sandbox_verdicts
    decides each member from its ticket's answer and then the message from its members, with
    the scan's rule (Verdict.worst). Kept in `members`, which both stores already persist."""
    deleted = report.action == AttachmentAction.DELETE
    members = [m.to_dict() for m in report.members]
    ticket = _ticket(ctx, report)
    if inner is not None and not deleted:
        members = [{"name": _file_name(a), "verdict": str(a.verdict), "symbols": list(a.symbols),
                    "size": a.size, "path": a.path,
                    **({"sandbox_ticket": t} if (t := _ticket(ctx, a)) else {})} for a in inner]
        ticket = next((str(m["sandbox_ticket"]) for m in members if "sandbox_ticket" in m), None)
    key = None
    if not deleted:
        key = blob_key(ctx.id, report.path)
        services.blobs.put(key, _message_bytes(part) if part.kind == "message" else part.payload())
    return IsolatedFile(
        message_id=ctx.id, path=report.path, filename=_file_name(report),
        size=report.size, sha256=report.sha256, declared_type=report.declared_type,
        detected_type=report.detected_type, verdict=report.verdict, symbols=list(report.symbols),
        action="delete" if deleted else "isolate", expires_at=expires, blob_key=key,
        members=members,
        sandbox_ticket=ticket, sandbox_submitted_at=services.clock.now() if ticket else None)


def _message_bytes(part: Part) -> bytes:
    """An attached message as the portal offers it (an .eml): its message, serialised. Its
    payload() is empty (the email package holds a message/rfc822 body as a parsed message)."""
    inner = part.node.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
        try:
            return inner[0].as_bytes()
        except Exception as exc:  # hostile headers the generator refuses: keep the mail back
            raise IsolationError(f"attached message {part.path} cannot be stored") from exc
    return part.payload()


def _convert(ctx: MessageContext, services: Services, tenant: TenantConfig,
             report: AttachmentReport, part: Part) -> _Converted | None:
    """The custom rule's conversion, when this file allows it. Anything else is isolated as is,
    with the reason: a conversion that cannot be done never lets the original through."""
    limits = services.settings.limits
    if report.conversion == "convert-pdf":
        return _to_pdf(ctx, services, tenant, report, part)
    if report.conversion == "remove-macros":
        from mailmoat.scan.macros import (
            MacroRemovalError,
            has_vba_project,
            macro_free_name,
            macro_free_type,
            remove_macros,
        )

        data = part.payload()
        if not has_vba_project(data):
            ctx.add("CONVERT_UNAVAILABLE", report.path, "not an OOXML document with macros; isolated")
            return None
        try:
            # Active content goes too (remote templates, DDE): "no macros" must mean nothing runs.
            cleaned = remove_macros(data, limits, active_content=True)
        except MacroRemovalError as exc:
            ctx.add("CONVERT_UNAVAILABLE", report.path, f"{exc}; isolated")
            return None
        name = macro_free_name(_file_name(report))
        ctx.add("MACROS_REMOVED", report.path, name)
        return _Converted(cleaned, name, macro_free_type(report.detected_type or report.declared_type))
    ctx.add("CONVERT_UNAVAILABLE", report.path,
            f"{report.conversion or 'conversion'} not available; isolated")
    return None


def _pdf_into(ctx: MessageContext, tenant: TenantConfig, path: str) -> str:
    """The matching convert-pdf rule's pdf_into (the rule named by this file's CUSTOM_RULE)."""
    names = {f.detail for f in ctx.findings if f.symbol == "CUSTOM_RULE" and f.target == path}
    rule = next((r for r in tenant.rules if r.name in names and r.action == "convert-pdf"), None)
    return rule.pdf_into if rule is not None else "message"


def _to_pdf(ctx: MessageContext, services: Services, tenant: TenantConfig,
            report: AttachmentReport, part: Part) -> _Converted | None:
    """convert-pdf: the converter's PDF, scanned again, replaces the file; the original goes to
    the portal. No converter, a failed conversion or a PDF that is not safe: isolated as is."""
    from mailmoat.context import Verdict
    from mailmoat.convert import ConversionError, convertible, pdf_name
    from mailmoat.services.rescan import rescanner

    name = _file_name(report)
    if not convertible(name):
        ctx.add("CONVERT_UNAVAILABLE", report.path, "not a convertible file type; isolated")
        return None
    if _pdf_into(ctx, tenant, report.path) == "portal":
        return None  # isolated; the portal offers it as a PDF
    if services.converter is None:
        ctx.add("CONVERT_UNAVAILABLE", report.path, "no PDF converter in this deployment; isolated")
        return None
    try:
        pdf = services.converter.convert(part.payload(), name)
    except ConversionError as exc:
        reason = str(exc)[:200]
    except Exception as exc:  # a converter bug or crash: the original stays isolated
        log.exception("PDF conversion failed", extra={"message_id": ctx.id, "part": report.path})
        reason = f"{type(exc).__name__}: {exc}"[:200]
    else:
        result = rescanner(services, tenant)(pdf, pdf_name(name))
        if result.verdict == Verdict.SAFE:
            ctx.add("CONVERTED_TO_PDF", report.path, pdf_name(name))
            return _Converted(pdf, pdf_name(name), "application/pdf", kind="pdf")
        reason = f"the PDF is {result.verdict}: " + ", ".join(sorted({h.symbol for h in result.hits}))
    log.warning("PDF conversion failed", extra={
        "message_id": ctx.id, "tenant": tenant.name, "part": report.path, "reason": reason})
    ctx.add("CONVERT_FAILED", report.path, f"{reason}; isolated")
    return None


def _replace_file(node: email.message.Message, done: _Converted) -> None:
    """The part keeps its place in the tree; its content, type and name become the copy's."""
    for name in [k for k in node if k.lower().startswith("content-")]:
        del node[name]
    encoded = base64.encodebytes(done.data).decode("ascii")
    # Written pre-folded with set_raw: the email package's refolder mangles a long MIME type
    # next to an RFC 2231 parameter (it encoded "vnd.openxml…" as an encoded word).
    node.set_raw("Content-Type", f"{done.content_type};{_name_param('name', done.filename)}")
    node.set_raw("Content-Transfer-Encoding", "base64")
    node.set_raw("Content-Disposition", f"attachment;{_name_param('filename', done.filename)}")
    node.set_payload(encoded)


def _name_param(key: str, filename: str) -> str:
    """`key="name"`, or RFC 2231 `key*0*=utf-8''…; key*1*=…` continuations for a non-ASCII
    name, one folded line each so no line nears SMTP's 998-byte limit."""
    if filename.isascii():
        cleaned = "".join(ch for ch in filename if ch.isprintable())
        return '\n {}="{}"'.format(key, cleaned.replace("\\", "\\\\").replace('"', '\\"'))
    encoded = encode_rfc2231(filename, "utf-8").partition("''")[2]
    chunks: list[str] = []
    while encoded:
        cut = min(len(encoded), 60)
        while cut < len(encoded) and "%" in encoded[max(cut - 2, 0):cut]:
            cut -= 1  # never split a %XX escape
        chunks.append(encoded[:cut])
        encoded = encoded[cut:]
    if len(chunks) == 1:
        return f"\n {key}*=utf-8''{chunks[0]}"
    chunks[0] = "utf-8''" + chunks[0]
    return ";".join(f"\n {key}*{i}*={chunk}" for i, chunk in enumerate(chunks))


def _file_name(report: AttachmentReport) -> str:
    if report.filename:
        return report.filename
    # An attached message usually has no name; the portal offers it as a mail file.
    return "message.eml" if report.declared_type.startswith("message/") else "unnamed"


def _already_delivered(services: Services, message_id: str, rcpt: str) -> bool:
    outcome = services.log.delivery_outcome(message_id, rcpt)
    kind = Outcome.of(outcome)
    return kind is not None and kind.done


def _children(node: email.message.Message) -> list[email.message.Message]:
    payload = node.get_payload()
    return [p for p in payload if isinstance(p, email.message.Message)] \
        if isinstance(payload, list) else []


def _strip(msg: EmailMessage, parts: list[Part]) -> None:
    """Take the parts out of the tree. Containers left empty go too, and a file that was the
    whole message becomes an empty text part the notice is written into."""
    parent: dict[int, email.message.Message] = {}
    stack: list[email.message.Message] = [msg]
    seen = 0
    while stack:
        current = stack.pop()
        seen += 1
        if seen > _MAX_NODES:
            raise IsolationError("too many MIME nodes")
        for child in _children(current):
            parent[id(child)] = current
            stack.append(child)
    for part in parts:
        node: email.message.Message | None = part.node
        while node is not None:
            if node is msg:
                _empty_text(msg)
                break
            up = parent.get(id(node))
            if up is None:
                raise IsolationError(f"part {part.path} has no parent")
            if up.get_content_maintype() != "multipart":
                node = up  # the only body of an attached message: the message goes
                continue
            payload = up.get_payload()
            assert isinstance(payload, list)
            payload[:] = [p for p in payload if p is not node]
            node = up if not payload and up is not msg else None


def _empty_text(msg: email.message.Message) -> None:
    for name in [k for k in msg if k.lower().startswith("content-")]:
        del msg[name]
    msg["Content-Type"] = 'text/plain; charset="utf-8"'
    msg["Content-Transfer-Encoding"] = "7bit"
    msg.set_payload("\n")


def _display_name(name: str) -> str:
    name = " ".join(name.split())
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"


def _notice(shown: list[_Removed], url: str | None, tenant: TenantConfig) -> Banner:
    from mailmoat.rewrite.banner import Banner

    words = NOTICE.get(tenant.language, NOTICE["ja"])
    isolated = [r.report for r in shown if not r.deleted and r.converted is None]
    deleted = [r.report for r in shown if r.deleted]
    converted = [r for r in shown if r.converted is not None and r.converted.kind == "converted"]
    as_pdf = [r for r in shown if r.converted is not None and r.converted.kind == "pdf"]
    lines: list[str] = [_RULE, words["title"]]
    parts: list[str] = [f'<strong style="color:#1C5FA8;font-size:15px;">'
                        f"{html.escape(words['title'])}</strong>"]
    if isolated:
        intro = words["isolated"].format(days=tenant.retention_days)
        lines.append(intro)
        parts.append(html.escape(intro))
        _link(lines, parts, url, words)
        for report in isolated:
            name = _display_name(_file_name(report))
            lines.append(f"・{name}")
            parts.append(f"・{html.escape(name)}")
    for kind, group in (("converted", converted), ("pdf", as_pdf)):
        if not group:
            continue
        intro = words[kind].format(days=tenant.retention_days)
        lines.append(intro)
        parts.append(html.escape(intro))
        if not isolated:
            _link(lines, parts, url, words)
        for removed in group:
            assert removed.converted is not None
            name = _display_name(_file_name(removed.report))
            line = f"・{name} → {_display_name(removed.converted.filename)}"
            lines.append(line)
            parts.append(html.escape(line))
    if deleted:
        lines.append(words["deleted"])
        parts.append(html.escape(words["deleted"]))
        for report in deleted:
            why = words["virus"] if "VIRUS" in report.symbols else words["danger"]
            name = _display_name(_file_name(report))
            lines.append(f"・{name} ({why})")
            parts.append(f"・{html.escape(name)} ({html.escape(why)})")
        if not isolated and url:
            # Nothing to fetch, but the portal says why each file was judged dangerous.
            details = words["details"].format(days=tenant.retention_days)
            lines.append(details)
            parts.append(html.escape(details))
            _link(lines, parts, url, words)
    lines.append(_RULE)
    return Banner(text="\n".join(lines) + "\n\n", html=_HTML.format(body="<br>".join(parts)))


_PPAP_NOTE = {
    "ja": ("【パスワードの利用】",
           "このメールに記載されたパスワードで、先に届いたメールの添付ファイルを開き、中身を検査しました。"
           "先のメールのリンクから確認できます。"),
    "en": ("[Password used]",
           "The password in this mail opened the attachment of an earlier mail, and its contents "
           "were checked. See them through the link in that mail."),
}


def _ppap_note(names: list[str], tenant: TenantConfig) -> Banner:
    """The follow-up's short note: which earlier file its password opened (never the password)."""
    from mailmoat.rewrite.banner import Banner

    title, body = _PPAP_NOTE.get(tenant.language, _PPAP_NOTE["ja"])
    shown = [_display_name(n) for n in names]
    lines = [_RULE, title, body, *(f"・{n}" for n in shown), _RULE]
    parts = [f'<strong style="color:#1C5FA8;font-size:15px;">{html.escape(title)}</strong>',
             html.escape(body), *(f"・{html.escape(n)}" for n in shown)]
    return Banner(text="\n".join(lines) + "\n\n", html=_HTML.format(body="<br>".join(parts)))


def _link(lines: list[str], parts: list[str], url: str | None, words: dict[str, str]) -> None:
    if url:
        lines.append(url)
        parts.append(f'<a href="{html.escape(url)}">{html.escape(words["link"])}</a> '
                     f"({html.escape(url)})")


def _with_notice(stripped: bytes, shown: list[_Removed], url: str | None, tenant: TenantConfig,
                 limits: WalkLimits) -> bytes:
    """The notice at the top of the first text and the first HTML body part of the message
    itself (not of attached messages); a new text part when there is none."""
    return _notice_into(stripped, _notice(shown, url, tenant), limits)


def _notice_into(stripped: bytes, notice: Banner, limits: WalkLimits) -> bytes:
    from mailmoat.rewrite import bodytext
    from mailmoat.rewrite.banner import insert_html_banner
    from mailmoat.rewrite.body import serialize_tree, write_html
    from mailmoat.rewrite.headers import RawMessage
    from mailmoat.rewrite.htmldoc import parse_html

    msg, _ = parse_bytes(stripped)
    parsed = walk(msg, limits)
    targets: dict[str, Part] = {}
    for part in parsed.parts:
        if part.kind == "body" and part.inside_message is None and part.content_type in _TEXT_KINDS:
            targets.setdefault(part.content_type, part)
    if not targets:
        if not msg.is_multipart():
            raise IsolationError("no place for the notice")
        text = EmailMessage()
        text.set_content(notice.text, subtype="plain", charset="utf-8", cte="base64")
        del text["MIME-Version"]
        payload = msg.get_payload()
        assert isinstance(payload, list)
        payload.insert(0, text)
    for ctype, part in targets.items():
        if ctype == "text/plain":
            bodytext.prepend_text(part.node, notice.text)
        else:
            doc = parse_html(bodytext.read_text(part.node))
            insert_html_banner(doc, notice)
            write_html(part.node, doc)
    return serialize_tree(stripped, msg, RawMessage.split(stripped).linesep)


register(Isolate())
