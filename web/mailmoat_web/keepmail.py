"""Keep-mail (continuity view) under /k: sign-in, the recipient's recent mail, one message safely.

A message's HTML is sanitised with nh3 (allow-list: no script, event handlers, style elements,
frames or forms), its links are neutralised with the rewrite stage's defang helpers (only our
portal's /m/ links stay), remote images are replaced by a placeholder until the reader asks,
and it is served from its own route with its own CSP (`sandbox`, `default-src 'none'`) into a
sandboxed iframe: even a sanitiser miss cannot run script in the portal's origin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from mailmoat.attempts import AttemptLimiter, attempt_limiter
from mailmoat.keepmail import (
    KeptMessage,
    SignInRefused,
    check_code,
    check_password,
    close_session,
    normalise,
    open_session,
    send_code,
    session_address,
)
from mailmoat.message import parse
from mailmoat.ports import KeepMailStore
from mailmoat.services.downloads import Download, content_disposition, delivered
from mailmoat_web.i18n import register_catalog, translator
from mailmoat_web.pages import SECURITY_HEADERS, csrf_ok, forbidden, language, page, secure
from mailmoat_web.pages import not_found as not_found_page

if TYPE_CHECKING:
    from mailmoat.message import Part
    from mailmoat.pipeline import Services

log = logging.getLogger("mailmoat.keepmail.web")

router = APIRouter(prefix="/k")

SESSION_COOKIE = "mm_keep"
HERE = Path(__file__).resolve().parent
_CSS = (HERE / "templates" / "keepmail" / "keepmail.css").read_bytes()
_MAX_ID = 256
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


# The outer page frames only our own body route.
PAGE_CSP = SECURITY_HEADERS["Content-Security-Policy"] + "; frame-src 'self'"


def _services(request: Request) -> Services | None:
    runtime = getattr(request.app.state, "runtime", None)
    return runtime.services if runtime is not None else None


def _store(request: Request) -> tuple[Services, KeepMailStore] | None:
    services = _services(request)
    if services is None:
        return None
    store = services.keepmail
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


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


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


def _sign_in(request: Request, csrf: str, check: Callable[[KeepMailStore, AttemptLimiter, datetime], str],
             refused: Callable[[str, str, int], Response]) -> Response:
    """A password or code sign-in: the entry checks, the credential check, then a session or
    the form again with why (refused, or rate-limited)."""
    posted = _posted(request, csrf)
    if isinstance(posted, Response):
        return posted
    services, store, lang = posted
    try:
        who = check(store, attempt_limiter(services), _now(services))
    except SignInRefused as exc:
        error, status = _refusal(request, lang, exc)
        return refused(lang, error, status)
    return _start_session(request, store, services, who)


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
    return _sign_in(request, csrf,
                    lambda store, limiter, _now: check_password(store, limiter, address[:320],
                                                                password[:1024], _client(request)),
                    lambda lang, error, status: _signin_page(request, lang, error, status))


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
    return _sign_in(request, csrf,
                    lambda store, limiter, now: check_code(store, limiter, address[:320], code[:32],
                                                           _client(request), now),
                    lambda lang, error, status: _code_page(request, lang, normalise(address[:320]),
                                                           error, status))


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
    from mailmoat.services import keepmail_view as kv

    try:
        view = kv.render_view(copy, services)
        blocked = 0
        if view.has_html:  # only to say how many remote images the frame holds back
            blocked = kv.sanitise_html(_html_of(copy, services), images=False,
                                       portal_url=services.settings.portal_url)[1]
    except Exception as exc:  # a copy our renderer chokes on: headers only, never a 500
        log.warning("keep-mail render failed", extra={"message_id": message_id,
                                                      "detail": type(exc).__name__})
        view = kv.KeptView(subject=kept.subject or "", from_header=kept.from_header or "", to=address,
                        date="", text=None, has_html=False)
        blocked = 0
    base = f"/k/m/{message_id}"
    response = page(request, "keepmail/message.html", lang, {
        "v": view, "kept": kept, "kind": kept.kind, "base": base, "images": bool(images),
        "blocked": blocked, "switch_url": base})
    return _with_page_csp(response)


def _html_of(copy: bytes, services: Services) -> str:
    from mailmoat.services.keepmail_view import walk_limits

    return _html_body(parse(copy, walk_limits(services)).parts)


def _html_body(parts: list[Part]) -> str:
    part = next((p for p in parts if p.kind == "body" and p.inside_message is None
                 and p.content_type == "text/html"), None)
    return part.text() if part is not None else ""


def body_csp(images: bool) -> str:
    """The framed body's own policy: no script at all, sandboxed even when opened directly."""
    img = "data: http: https:" if images else "data:"
    return (f"default-src 'none'; img-src {img}; style-src 'unsafe-inline'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'self'; "
            "sandbox allow-popups allow-popups-to-escape-sandbox")


@router.get("/m/{message_id}/body", response_class=HTMLResponse)
def message_body(request: Request, message_id: str, images: int = 0) -> Response:
    found = _kept(request, message_id)
    if found is None:
        return not_found_page(request)
    services, _address, _kept_row, copy = found
    from mailmoat.services import keepmail_view as kv

    try:
        parsed = parse(copy, kv.walk_limits(services))
        clean, _blocked = kv.sanitise_html(_html_body(parsed.parts), images=bool(images),
                                           portal_url=services.settings.portal_url,
                                           inline=kv.inline_images(parsed.parts))
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
    from mailmoat.services.keepmail_view import walk_limits

    parsed = parse(copy, walk_limits(services))
    part = next((p for p in parsed.parts if p.is_attachment and p.inside_message is None
                 and p.path == path), None)
    if part is None:
        return not_found_page(request)
    log.info("keep-mail download", extra={"message_id": message_id, "path": path, "action": "download"})
    sent = delivered(services.blobs, Download("keep-mail", part.filename or "attachment",
                                              part.payload()))
    if sent.url is not None:  # large: from a short-lived copy in the quarantine bucket
        return RedirectResponse(sent.url, status_code=303)
    # octet-stream + nosniff: a kept .html or .svg is never rendered in our origin.
    return Response(sent.data, media_type="application/octet-stream", headers={
        "Content-Disposition": content_disposition(sent.filename)})
