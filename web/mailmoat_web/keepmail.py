"""Keep-mail (continuity view) under /k: sign-in, the recipient's recent mail, one message safely.

A message's HTML is sanitised with nh3 (allow-list: no script, event handlers, style elements,
frames or forms), its links are neutralised with the rewrite stage's defang helpers (only our
portal's /m/ links stay), remote images are replaced by a placeholder until the reader asks,
and it is served from its own route with its own CSP (`sandbox`, `default-src 'none'`) into a
sandboxed iframe: even a sanitiser miss cannot run script in the portal's origin.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import lxml.html
import nh3
from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from mailmoat.keepmail import (
    KeepMailStore,
    KeptMessage,
    SignInRefused,
    check_code,
    check_password,
    close_session,
    keepmail_store,
    normalise,
    open_session,
    send_code,
    session_address,
)
from mailmoat.message import Part, WalkLimits, header_text, parse
from mailmoat.rewrite.defang import defang_html, defang_text, portal_links
from mailmoat.rewrite.htmldoc import body_of, parse_html
from mailmoat_web import files as filetools
from mailmoat_web.i18n import register_catalog, translator
from mailmoat_web.pages import SECURITY_HEADERS, csrf_ok, forbidden, language, page, secure
from mailmoat_web.pages import not_found as not_found_page

if TYPE_CHECKING:
    from mailmoat.pipeline import Services

log = logging.getLogger("mailmoat.keepmail.web")

router = APIRouter(prefix="/k")

SESSION_COOKIE = "mm_keep"
HERE = Path(__file__).resolve().parent
_CSS = (HERE / "templates" / "keepmail" / "keepmail.css").read_bytes()
_MAX_ID = 256
MAX_HTML_CHARS = 2_000_000  # a body part beyond this is cut before sanitising (bounded work)
MAX_TEXT_CHARS = 1_000_000
MAX_INLINE_IMAGE_BYTES = 2_000_000
# The outer page frames only our own body route.
PAGE_CSP = SECURITY_HEADERS["Content-Security-Policy"] + "; frame-src 'self'"
# A grey box with a crossed-out frame, shown where a remote image was not loaded.
PLACEHOLDER = "data:image/svg+xml;base64," + base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40"'
    b' fill="#eef0f3" stroke="#b0b7c0"/><path d="M0 0L120 40M120 0L0 40" stroke="#c9ced6"/></svg>'
).decode("ascii")
_INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})  # never SVG
_PORTAL_URL = re.compile(r"https?://[^\s<>\"']+/m/[A-Za-z0-9_-]+")

# What survives sanitising: nh3's defaults (formatting, tables, lists, images) without
# anything that loads or runs; style attributes only with properties that cannot fetch.
_TAGS = set(nh3.ALLOWED_TAGS) - {"area", "map"}
_ATTRIBUTES: dict[str, set[str]] = {
    tag: {a for a in attrs if a not in ("cite", "longdesc")} for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()
}
_ATTRIBUTES["*"] = {"style", "title", "lang", "dir", "align", "valign", "bgcolor", "color", "width", "height"}
_ATTRIBUTES["font"] = {"color", "face", "size"}
_ATTRIBUTES["a"] = {"href", "target"}
_ATTRIBUTES["img"] = {"src", "alt", "width", "height", "align", "border"}
_ATTRIBUTES["table"] = _ATTRIBUTES.get("table", set()) | {"border", "cellpadding", "cellspacing"}
_TAGS.add("font")
_STYLE_PROPERTIES = {
    "color", "background-color", "font-weight", "font-style", "font-size", "font-family",
    "text-align", "text-decoration", "vertical-align", "line-height", "white-space",
    "width", "height", "max-width", "min-width", "padding", "padding-left", "padding-right",
    "padding-top", "padding-bottom", "margin", "margin-left", "margin-right", "margin-top",
    "margin-bottom", "border", "border-collapse", "border-color", "border-style", "border-width",
    "display", "text-indent", "letter-spacing",
}
_DROP_WITH_CONTENT = {"script", "style", "title", "noscript", "template", "textarea", "select",
                      "iframe", "object", "embed", "svg", "math"}

register_catalog({
    "ja": {
        "keep.title": "メール閲覧（キープメール）",
        "keep.unavailable.title": "キープメールはこの環境では使えません",
        "keep.unavailable.body": "このゲートウェイ（AWS 版）はキープメールのコピーを保存していません。"
                                 "管理者にお問い合わせください。",
        "keep.signin.heading": "サインイン",
        "keep.signin.body": "メールサーバーが止まっているときも、最近届いたメールをここで読めます。",
        "keep.address": "メールアドレス",
        "keep.password": "パスワード",
        "keep.signin": "サインイン",
        "keep.code.ask": "登録済みの別のアドレスに確認コードを送る",
        "keep.code.send": "コードを送る",
        "keep.code.heading": "確認コードの入力",
        "keep.code.sent": "登録済みの別のアドレスがある場合、そこに確認コードを送りました"
                          "（{minutes} 分間有効）。",
        "keep.code": "確認コード",
        "keep.refused": "サインインできませんでした。入力内容を確認してください。",
        "keep.limited": "試行回数が上限に達しました。しばらくしてからお試しください。",
        "keep.signout": "サインアウト",
        "keep.inbox.heading": "最近のメール（{days} 日間）",
        "keep.inbox.empty": "表示できるメールはありません。",
        "keep.received": "受信日時",
        "keep.status": "状態",
        "keep.status.delivered": "配送済み",
        "keep.status.refused": "メールボックスが受け取りを拒否",
        "keep.status.pending": "配送待ち",
        "keep.to": "宛先",
        "keep.back": "一覧に戻る",
        "keep.isolated": "隔離された添付ファイル",
        "keep.isolated.open": "添付ファイルのページを開く",
        "keep.attachments": "添付ファイル",
        "keep.download": "ダウンロード",
        "keep.images.blocked": "外部の画像は表示していません（{count} 件）。",
        "keep.images.show": "画像を表示する",
        "keep.images.hide": "画像を表示しない",
        "keep.frame": "メール本文",
        "keep.no_body": "本文はありません。",
    },
    "en": {
        "keep.title": "Keep-mail",
        "keep.unavailable.title": "Keep-mail is not available here",
        "keep.unavailable.body": "This gateway (the AWS deployment) keeps no keep-mail copies. "
                                 "Please ask your administrator.",
        "keep.signin.heading": "Sign in",
        "keep.signin.body": "Read your recent mail here, also while your mail server is down.",
        "keep.address": "Email address",
        "keep.password": "Password",
        "keep.signin": "Sign in",
        "keep.code.ask": "Send a code to my registered alternate address",
        "keep.code.send": "Send code",
        "keep.code.heading": "Enter your code",
        "keep.code.sent": "If the address has a registered alternate address, a code was sent there "
                          "(valid {minutes} minutes).",
        "keep.code": "Code",
        "keep.refused": "Sign-in failed. Check what you entered.",
        "keep.limited": "Too many attempts. Please try again later.",
        "keep.signout": "Sign out",
        "keep.inbox.heading": "Recent mail (last {days} days)",
        "keep.inbox.empty": "No messages to show.",
        "keep.received": "Received",
        "keep.status": "Status",
        "keep.status.delivered": "Delivered",
        "keep.status.refused": "Refused by your mailbox",
        "keep.status.pending": "Waiting for delivery",
        "keep.to": "To",
        "keep.back": "Back to the list",
        "keep.isolated": "Isolated attachments",
        "keep.isolated.open": "Open the attachment page",
        "keep.attachments": "Attachments",
        "keep.download": "Download",
        "keep.images.blocked": "Remote images are not shown ({count}).",
        "keep.images.show": "Show images",
        "keep.images.hide": "Hide images",
        "keep.frame": "Message body",
        "keep.no_body": "This message has no body.",
    },
})


# --- rendering a kept copy ---------------------------------------------------------------------

@dataclass(slots=True)
class KeptAttachment:
    path: str
    filename: str
    size: int


@dataclass(slots=True)
class KeptView:
    subject: str
    from_header: str
    to: str
    date: str
    text: str | None
    has_html: bool
    portal_urls: list[str] = field(default_factory=list)
    attachments: list[KeptAttachment] = field(default_factory=list)


def _limits(services: Services) -> WalkLimits:
    limits = services.settings.limits
    return WalkLimits(max_parts=min(limits.max_parts, 1000), max_depth=limits.max_depth)


def render_view(copy: bytes, services: Services) -> KeptView:
    """Headers, the plain text (escaped by the template, links defanged), isolated-file links
    to our own portal, and the attachments left in the copy (the scanner kept them)."""
    parsed = parse(copy, _limits(services))
    msg = parsed.message
    keep = portal_links(services.settings.portal_url)
    text_part = next((p for p in parsed.parts if p.kind == "body" and p.inside_message is None
                      and p.content_type == "text/plain"), None)
    html_part = next((p for p in parsed.parts if p.kind == "body" and p.inside_message is None
                      and p.content_type == "text/html"), None)
    text = text_part.text()[:MAX_TEXT_CHARS] if text_part is not None else None
    urls: list[str] = []
    for part in (text_part, html_part):
        if part is None:
            continue
        for url in _PORTAL_URL.findall(part.text()[:MAX_HTML_CHARS]):
            if keep(url) and url not in urls:
                urls.append(url)
    attachments = [KeptAttachment(p.path, p.filename or "unnamed", len(p.payload()))
                   for p in parsed.parts if p.is_attachment and p.inside_message is None][:100]
    return KeptView(
        subject=header_text(msg, "subject") or "", from_header=header_text(msg, "from") or "",
        to=header_text(msg, "to") or "", date=header_text(msg, "date") or "",
        text=defang_text(text, keep) if text is not None else None, has_html=html_part is not None,
        portal_urls=urls, attachments=attachments)


def _inline_images(parts: list[Part]) -> dict[str, str]:
    """cid → data: URI for the copy's own inline raster images (never SVG), size-bounded."""
    found: dict[str, str] = {}
    for part in parts:
        if part.kind != "inline-image" or not part.content_id or part.content_type not in _INLINE_TYPES:
            continue
        data = part.payload()
        if len(data) > MAX_INLINE_IMAGE_BYTES:
            continue
        encoded = base64.b64encode(data).decode("ascii")
        found[part.content_id.strip("<>").lower()] = f"data:{part.content_type};base64,{encoded}"
    return found


def _is_web_url(value: str) -> bool:
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def sanitise_html(html: str, *, images: bool, portal_url: str,
                  inline: dict[str, str] | None = None) -> tuple[str, int]:
    """The body part as safe HTML, and how many remote images were held back. nh3 runs first
    (hostile structure out) and last (the final word on every attribute); in between, the
    rewrite stage's defang removes link targets and shows them as text."""
    keep = portal_links(portal_url)
    inline = inline or {}
    first = nh3.clean(html[:MAX_HTML_CHARS], tags=_TAGS, clean_content_tags=_DROP_WITH_CONTENT,
                      attributes=_ATTRIBUTES, url_schemes={"http", "https", "cid", "mailto"},
                      strip_comments=True, link_rel=None, filter_style_properties=_STYLE_PROPERTIES)
    doc = parse_html(first)
    defang_html(doc.root, keep)
    blocked = 0
    for img in doc.root.iter("img"):
        src = (img.get("src") or "").strip()
        if src.lower().startswith("cid:"):
            img.set("src", inline.get(src[4:].strip("<>").lower(), PLACEHOLDER))
        elif _is_web_url(src) and images:
            continue
        else:
            if _is_web_url(src):
                blocked += 1
            img.set("src", PLACEHOLDER)
    for anchor in doc.root.iter("a"):
        if anchor.get("href"):
            anchor.set("target", "_blank")  # our portal, outside the sandboxed frame
    body = lxml.html.tostring(body_of(doc.root), encoding="unicode", method="html")

    def final(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "href":
            return value if tag == "a" and keep(value) else None
        if attribute == "target":
            return "_blank" if tag == "a" else None
        if attribute == "src":
            if tag != "img":
                return None
            if value == PLACEHOLDER or (value.startswith("data:image/") and value in inline.values()):
                return value
            return value if images and _is_web_url(value) else PLACEHOLDER
        return value

    clean = nh3.clean(body, tags=_TAGS, clean_content_tags=_DROP_WITH_CONTENT, attributes=_ATTRIBUTES,
                      url_schemes={"http", "https", "data"}, strip_comments=True,
                      link_rel="noopener noreferrer", attribute_filter=final,
                      filter_style_properties=_STYLE_PROPERTIES)
    return clean, blocked


def body_csp(images: bool) -> str:
    """The framed body's own policy: no script at all, sandboxed even when opened directly."""
    img = "data: http: https:" if images else "data:"
    return (f"default-src 'none'; img-src {img}; style-src 'unsafe-inline'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'self'; "
            "sandbox allow-popups allow-popups-to-escape-sandbox")


# --- request helpers ---------------------------------------------------------------------------

def _services(request: Request) -> Services | None:
    runtime = getattr(request.app.state, "runtime", None)
    return runtime.services if runtime is not None else None


def _store(request: Request) -> tuple[Services, KeepMailStore] | None:
    services = _services(request)
    if services is None:
        return None
    store = keepmail_store(services)
    return (services, store) if store is not None else None


def _now(services: Services) -> datetime:
    return services.clock.now()


def _signed_in(request: Request) -> tuple[Services, KeepMailStore, str] | None:
    found = _store(request)
    if found is None:
        return None
    services, store = found
    address = session_address(store, request.cookies.get(SESSION_COOKIE), _now(services))
    return (services, store, address) if address else None


def _days(services: Services, address: str) -> int:
    recipient = services.directory.recipient(address)
    tenant = services.config.tenant(recipient.tenant if recipient else None)
    return max(0, tenant.keepmail_days)


def _lang(request: Request, services: Services | None, address: str | None = None) -> str:
    default = "ja"
    if services is not None and address:
        recipient = services.directory.recipient(address)
        default = services.config.tenant(recipient.tenant if recipient else None).language
    return language(request, default)


def _kept(request: Request, message_id: str) -> tuple[Services, str, KeptMessage, bytes] | None:
    """The signed-in recipient's own kept copy within their window, with its bytes; anything
    else (another recipient's, too old, swept) is 404."""
    found = _signed_in(request)
    if found is None or not message_id or len(message_id) > _MAX_ID or "/" in message_id:
        return None
    services, store, address = found
    kept = store.get(message_id, address)
    if kept is None or kept.received_at < _now(services) - timedelta(days=_days(services, address)):
        return None
    try:
        copy = services.blobs.get(kept.blob_key)
    except FileNotFoundError:
        return None
    return services, address, kept, copy


def _with_page_csp(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


def _signin_page(request: Request, lang: str, error: str = "", status: int = 200) -> Response:
    return page(request, "keepmail/signin.html", lang, {"error": error, "switch_url": "/k"}, status)


def _code_page(request: Request, lang: str, address: str, error: str = "", status: int = 200) -> Response:
    from mailmoat.keepmail import CODE_TTL

    return page(request, "keepmail/code.html", lang, {
        "address": address, "error": error, "minutes": int(CODE_TTL.total_seconds() // 60),
        "switch_url": "/k"}, status)


def _start_session(request: Request, store: KeepMailStore, services: Services, address: str) -> Response:
    token = open_session(store, address, _now(services))
    response = RedirectResponse("/k/inbox", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure(request),
                        path="/k", max_age=8 * 3600)
    log.info("keep-mail sign-in", extra={"action": "signin"})
    return response


def _refusal(request: Request, lang: str, exc: SignInRefused) -> tuple[str, int]:
    t = translator(lang)
    return (t("keep.limited"), 429) if exc.limited else (t("keep.refused"), 401)


# --- routes ------------------------------------------------------------------------------------

@router.get("/static/keepmail.css")
def stylesheet() -> Response:
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


def _posted(request: Request, csrf: str) -> Response | tuple[Services, KeepMailStore, str]:
    """Every sign-in POST starts here: CSRF first, then the store (none: 404), then the language."""
    if not csrf_ok(request, csrf):
        return forbidden(request)
    found = _store(request)
    if found is None:
        return not_found_page(request)
    return found[0], found[1], language(request, "ja")


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def signin_form(request: Request) -> Response:
    if _store(request) is None:
        # No keep-mail store in this runtime (AWS: docs/archive-keepmail.md): say so plainly
        # instead of a sign-in form whose every answer would be a 404.
        return page(request, "error.html", language(request, "ja"),
                    {"title_key": "keep.unavailable.title", "body_key": "keep.unavailable.body"}, 501)
    if _signed_in(request) is not None:
        return RedirectResponse("/k/inbox", status_code=303)
    return _signin_page(request, language(request, "ja"))


@router.post("/signin")
def signin(request: Request, csrf: str = Form(""), address: str = Form(""),
           password: str = Form("")) -> Response:
    posted = _posted(request, csrf)
    if isinstance(posted, Response):
        return posted
    services, store, lang = posted
    try:
        who = check_password(store, address[:320], password[:1024], _now(services))
    except SignInRefused as exc:
        error, status = _refusal(request, lang, exc)
        return _signin_page(request, lang, error, status)
    return _start_session(request, store, services, who)


@router.post("/code")
def request_code(request: Request, csrf: str = Form(""), address: str = Form("")) -> Response:
    posted = _posted(request, csrf)
    if isinstance(posted, Response):
        return posted
    services, store, lang = posted
    address = normalise(address[:320])
    try:
        send_code(store, services, address, _now(services))
    except Exception:  # the answer must not tell whether the address exists
        log.exception("keep-mail code failed", extra={"action": "code"})
    return _code_page(request, lang, address)


@router.post("/code/verify")
def verify_code(request: Request, csrf: str = Form(""), address: str = Form(""),
                code: str = Form("")) -> Response:
    posted = _posted(request, csrf)
    if isinstance(posted, Response):
        return posted
    services, store, lang = posted
    try:
        who = check_code(store, address[:320], code[:32], _now(services))
    except SignInRefused as exc:
        error, status = _refusal(request, lang, exc)
        return _code_page(request, lang, normalise(address[:320]), error, status)
    return _start_session(request, store, services, who)


@router.post("/signout")
def signout(request: Request, csrf: str = Form("")) -> Response:
    if not csrf_ok(request, csrf):
        return forbidden(request)
    found = _store(request)
    if found is not None:
        close_session(found[1], request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/k", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/k")
    return response


@router.get("/inbox", response_class=HTMLResponse)
def inbox(request: Request) -> Response:
    found = _signed_in(request)
    if found is None:
        return RedirectResponse("/k", status_code=303)
    services, store, address = found
    days = _days(services, address)
    lang = _lang(request, services, address)
    kept = store.messages(address, _now(services) - timedelta(days=days)) if days else []
    rows = [{"id": k.message_id, "received": f"{k.received_at:%Y-%m-%d %H:%M} UTC",
             "from": k.from_header or "", "subject": k.subject or "", "kind": k.kind,
             "outcome": k.outcome} for k in kept]
    return page(request, "keepmail/inbox.html", lang, {
        "address": address, "days": days, "rows": rows, "switch_url": "/k/inbox"})


@router.get("/m/{message_id}", response_class=HTMLResponse)
def message_page(request: Request, message_id: str, images: int = 0) -> Response:
    found = _kept(request, message_id)
    if found is None:
        return not_found_page(request)
    services, address, kept, copy = found
    lang = _lang(request, services, address)
    try:
        view = render_view(copy, services)
        blocked = 0
        if view.has_html:  # only to say how many remote images the frame holds back
            blocked = sanitise_html(_html_of(copy, services), images=False,
                                    portal_url=services.settings.portal_url)[1]
    except Exception as exc:  # a copy our renderer chokes on: headers only, never a 500
        log.warning("keep-mail render failed", extra={"message_id": message_id,
                                                      "detail": type(exc).__name__})
        view = KeptView(subject=kept.subject or "", from_header=kept.from_header or "", to=address,
                        date="", text=None, has_html=False)
        blocked = 0
    base = f"/k/m/{message_id}"
    response = page(request, "keepmail/message.html", lang, {
        "v": view, "kept": kept, "kind": kept.kind, "base": base, "images": bool(images),
        "blocked": blocked, "switch_url": base})
    return _with_page_csp(response)


def _html_of(copy: bytes, services: Services) -> str:
    parsed = parse(copy, _limits(services))
    part = next((p for p in parsed.parts if p.kind == "body" and p.inside_message is None
                 and p.content_type == "text/html"), None)
    return part.text() if part is not None else ""


@router.get("/m/{message_id}/body", response_class=HTMLResponse)
def message_body(request: Request, message_id: str, images: int = 0) -> Response:
    found = _kept(request, message_id)
    if found is None:
        return not_found_page(request)
    services, _address, _kept_row, copy = found
    try:
        parsed = parse(copy, _limits(services))
        part = next((p for p in parsed.parts if p.kind == "body" and p.inside_message is None
                     and p.content_type == "text/html"), None)
        html = part.text() if part is not None else ""
        clean, _blocked = sanitise_html(html, images=bool(images), portal_url=services.settings.portal_url,
                                        inline=_inline_images(parsed.parts))
    except Exception as exc:
        log.warning("keep-mail body failed", extra={"message_id": message_id,
                                                    "detail": type(exc).__name__})
        clean = ""
    document = ('<!doctype html><html><head><meta charset="utf-8">'
                '<meta name="referrer" content="no-referrer">'
                "<style>body{font-family:system-ui,sans-serif;margin:8px;overflow-wrap:anywhere}"
                "img{max-width:100%;height:auto}</style></head><body>" + clean + "</body></html>")
    return HTMLResponse(document, headers={
        "Content-Security-Policy": body_csp(bool(images)), "X-Frame-Options": "SAMEORIGIN",
        "Referrer-Policy": "no-referrer", "Cross-Origin-Resource-Policy": "same-origin"})


@router.get("/m/{message_id}/part/{path}")
def attachment(request: Request, message_id: str, path: str) -> Response:
    """A file the scanner left in the message (the copy holds no isolated or deleted file)."""
    found = _kept(request, message_id)
    if found is None:
        return not_found_page(request)
    services, _address, _kept_row, copy = found
    parsed = parse(copy, _limits(services))
    part = next((p for p in parsed.parts if p.is_attachment and p.inside_message is None
                 and p.path == path), None)
    if part is None:
        return not_found_page(request)
    log.info("keep-mail download", extra={"message_id": message_id, "path": path, "action": "download"})
    # octet-stream + nosniff: a kept .html or .svg is never rendered in our origin.
    return Response(part.payload(), media_type="application/octet-stream", headers={
        "Content-Disposition": filetools.content_disposition(part.filename or "attachment")})
