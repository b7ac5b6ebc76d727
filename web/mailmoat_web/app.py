"""The recipient portal (FastAPI): served by uvicorn locally and by Mangum on AWS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from mailmoat.adapters.sqlite_isolation import isolation_store
from mailmoat.context import Verdict
from mailmoat.isolation import (
    DownloadRecord,
    IsolatedFile,
    IsolationStore,
    PortalAccess,
    resolve,
    sweep,
)
from mailmoat_web import files as filetools
from mailmoat_web.admin import admin_console_router
from mailmoat_web.i18n import flag, reasons, translator, verdict_words
from mailmoat_web.keepmail import router as keepmail_router
from mailmoat_web.pages import (
    HERE,
    SECURITY_HEADERS,
    csrf_ok,
    forbidden,
    language,
    page,
)
from mailmoat_web.pages import not_found as not_found_page
from mailmoat_web.spam import router as spam_router

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.isolation import PortalMessage
    from mailmoat.pipeline import Services
    from mailmoat.runtime import Runtime

log = logging.getLogger("mailmoat.portal")

# Password attempts per file: at most this many failures in the window (DESIGN §7).
ATTEMPTS_MAX = 5
ATTEMPTS_WINDOW = timedelta(minutes=15)
PRESIGN_ABOVE_BYTES = 5_000_000  # larger originals are served by presigned URL when the store can

@dataclass(slots=True)
class MemberView:
    index: int
    name: str
    size: int
    verdict: str
    verdict_label: str
    reasons: list[str]
    downloadable: bool
    needs_confirm: bool


@dataclass(slots=True)
class UnlockView:
    ok: bool
    message: str
    password: str = ""  # echoed only into the forms of this one no-store response
    archive: bool = True
    members: list[MemberView] = field(default_factory=list)


@dataclass(slots=True)
class FileView:
    path: str
    filename: str
    size: int
    sha256: str
    verdict: str
    verdict_label: str
    reasons: list[str]
    deleted: bool
    actions: list[str]
    needs_confirm: bool
    macro_free_name: str
    members: list[dict[str, str]]
    unlock: UnlockView | None = None


class Portal:
    """Everything a request needs, taken from the runtime's services."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store: IsolationStore = isolation_store(services)

    def tenant(self, message: PortalMessage) -> TenantConfig:
        return self.services.config.tenant(message.tenant)

    def now(self) -> Any:
        return self.services.clock.now()


SWEEP_EVERY_SECONDS = 24 * 3600.0


def create_app(runtime: Runtime | None = None, *, sweep_every: float | None = SWEEP_EVERY_SECONDS
               ) -> FastAPI:
    """The portal app. With a runtime and `sweep_every`, expired isolated files are swept when
    the server starts and then periodically (local `mailmoat serve`; AWS uses lifecycle + TTL)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        p = app.state.portal
        if isinstance(p, Portal) and sweep_every:
            task = asyncio.create_task(_sweep_forever(p, sweep_every))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()

    app = FastAPI(title="mailmoat portal", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.runtime = runtime
    app.state.portal = Portal(runtime.services) if runtime is not None else None
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request,
                               call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def portal() -> Portal | None:
        value = app.state.portal
        return value if isinstance(value, Portal) else None

    def posted_file(request: Request, token: str, path: str, csrf: str, *,
                    encrypted_only: bool = False
                    ) -> Response | tuple[Portal, PortalAccess, PortalMessage, IsolatedFile]:
        """Every POST starts here: CSRF first, then the token, then the file (404 alike)."""
        if not csrf_ok(request, csrf):
            return forbidden(request)
        found = _open(portal(), token)
        if found is None:
            return not_found_page(request)
        p, access, message = found
        record = _file(p, message.id, path)
        if record is None or record.blob_key is None or (
                encrypted_only and record.verdict != Verdict.ENCRYPTED):
            return not_found_page(request)
        return p, access, message, record

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        lang = language(request, "ja")
        return page(request, "home.html", lang, {"switch_url": "/"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/m/{token}", response_class=HTMLResponse)
    def messagepage(request: Request, token: str) -> Response:
        found = _open(portal(), token)
        if found is None:
            return not_found_page(request)
        p, access, message = found
        return _message_page(request, p, token, access, message)

    @app.post("/m/{token}/f/{path}/download")
    def download(request: Request, token: str, path: str, csrf: str = Form(""),
                 kind: str = Form("original"), confirm: str = Form("")) -> Response:
        target = posted_file(request, token, path, csrf)
        if isinstance(target, Response):
            return target
        p, access, message, record = target
        key = record.blob_key
        assert key is not None  # posted_file refused files without stored bytes
        lang = language(request, message.language)
        if kind == "original":
            if record.verdict == Verdict.SAFE or (record.verdict == Verdict.RISKY and confirm == "1"):
                presign = getattr(p.services.blobs, "presigned_get", None)
                if presign is not None and record.size > PRESIGN_ABOVE_BYTES:
                    # On AWS a large file goes straight from S3 (Lambda responses are capped at
                    # 6 MB); the redirect is only handed out after the checks above.
                    _log_download(request, p, access, record, "original:presigned")
                    return RedirectResponse(presign(key, expires_in=300,
                                                    filename=record.filename), status_code=303)
                data = p.services.blobs.get(key)
                return _send(request, p, access, record, data, record.filename, "original")
            if record.verdict == Verdict.RISKY:
                return _warning(request, lang, token, record, {"kind": "original"})
            return _refused(request, lang, token)
        if kind == "safe" and filetools.safe_copy_kind(record.detected_type) \
                and record.verdict in (Verdict.SAFE, Verdict.RISKY):
            try:
                data, name = filetools.safe_copy(p.services.blobs.get(key),
                                                 record.detected_type, record.filename,
                                                 p.services.settings.limits)
                verdict = _rescan(p, message, data, name).verdict
            except Exception as exc:  # hostile input the renderer refuses: no copy, no 500
                log.warning("safe copy failed", extra={"message_id": message.id,
                                                       "detail": type(exc).__name__})
                return _refused(request, lang, token)
            if verdict != Verdict.SAFE:  # the copy must pass the same checks, or it is no copy
                log.warning("safe copy not safe", extra={"message_id": message.id,
                                                         "detail": str(verdict)})
                return _refused(request, lang, token)
            return _send(request, p, access, record, data, name, "safe")
        if kind == "macro-removed" and _macro_removable(record):
            try:
                data = filetools.remove_macros(p.services.blobs.get(key),
                                               p.services.settings.limits)
            except filetools.MacroRemovalError as exc:
                log.warning("macro removal failed", extra={"message_id": message.id,
                                                           "detail": str(exc)[:200]})
                return _refused(request, lang, token)
            return _send(request, p, access, record, data, filetools.macro_free_name(record.filename),
                         "macro-removed")
        return _refused(request, lang, token)

    @app.post("/m/{token}/f/{path}/unlock")
    def unlock(request: Request, token: str, path: str, csrf: str = Form(""),
               password: str = Form("")) -> Response:
        target = posted_file(request, token, path, csrf, encrypted_only=True)
        if isinstance(target, Response):
            return target
        p, access, message, record = target
        view, status, _ = _unlock(p, message, record, password, language(request, message.language))
        return _message_page(request, p, token, access, message, {record.path: view}, status)

    @app.post("/m/{token}/f/{path}/member")
    def member(request: Request, token: str, path: str, csrf: str = Form(""),
               password: str = Form(""), index: int = Form(-1), confirm: str = Form("")) -> Response:
        target = posted_file(request, token, path, csrf, encrypted_only=True)
        if isinstance(target, Response):
            return target
        p, access, message, record = target
        lang = language(request, message.language)
        view, status, decrypted = _unlock(p, message, record, password, lang)
        if decrypted is None or not 0 <= index < len(view.members):
            return _message_page(request, p, token, access, message, {record.path: view},
                                 status if status != 200 else 404)
        shown = view.members[index]
        if not shown.downloadable:
            return _refused(request, lang, token)
        if shown.needs_confirm and confirm != "1":
            return _warning(request, lang, token, record,
                            {"index": str(index), "password": password}, action="member")
        name, data = decrypted.members[index]
        filename = name.rsplit("/", 1)[-1] if decrypted.archive else record.filename
        kind = f"member:{name}" if decrypted.archive else "decrypted"
        return _send(request, p, access, record, data, filename, kind)

    @app.get("/m/{token}/f/{path}/preview", response_class=HTMLResponse)
    def preview(request: Request, token: str, path: str) -> Response:
        found = _open(portal(), token)
        if found is None:
            return not_found_page(request)
        p, _access, message = found
        record = _file(p, message.id, path)
        if record is None or "preview" not in _file_view(record, "ja").actions:
            return not_found_page(request)
        assert record.blob_key is not None
        lang = language(request, message.language)
        try:
            shown = filetools.preview(p.services.blobs.get(record.blob_key), record.detected_type,
                                      p.services.settings.limits)
        except Exception as exc:  # a file the renderer chokes on gets no preview, not a 500
            log.warning("preview failed", extra={"message_id": message.id, "path": path,
                                                 "detail": type(exc).__name__})
            shown = None
        return page(request, "preview.html", lang, {
            "filename": record.filename, "preview": shown, "back": f"/m/{token}",
            "switch_url": f"/m/{token}/f/{path}/preview"}, 200 if shown is not None else 422)

    # Feature routers (admin console, keep-mail, spam digest links): one line each, here.
    app.include_router(keepmail_router)  # /k: keep-mail (continuity view)
    app.include_router(spam_router)  # /s: spam digest links (release, allow sender)
    app.include_router(admin_console_router())  # /admin: tenant admin console

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return not_found_page(request)

    return app


async def _sweep_forever(p: Portal, every: float) -> None:
    while True:
        try:
            await asyncio.to_thread(sweep, p.store, p.services.blobs, p.now())
        except Exception:  # a failed sweep is retried next time; it must not stop the portal
            log.exception("isolation sweep failed")
        await asyncio.sleep(every)


# --- request helpers ---------------------------------------------------------------------------

def _open(p: Portal | None, token: str) -> tuple[Portal, PortalAccess, PortalMessage] | None:
    """The token's message, or None: unknown, malformed and expired look the same."""
    if p is None:
        return None
    access = resolve(p.store, token, p.now())
    if access is None:
        return None
    message = p.store.message(access.message_id)
    if message is None:
        return None
    return p, access, message


def _file(p: Portal, message_id: str, path: str) -> IsolatedFile | None:
    return next((f for f in p.store.files(message_id) if f.path == path), None)


def _refused(request: Request, lang: str, token: str) -> Response:
    return page(request, "error.html", lang, {"title_key": "file.no_download", "body_key": "",
                                                "back": f"/m/{token}"}, 403)


def _warning(request: Request, lang: str, token: str, record: IsolatedFile, fields: dict[str, str],
             action: str = "download") -> Response:
    return page(request, "warning.html", lang, {
        "filename": record.filename, "action": f"/m/{token}/f/{record.path}/{action}",
        "fields": fields, "back": f"/m/{token}", "reasons": reasons(record.symbols, lang)})


def _send(request: Request, p: Portal, access: PortalAccess, record: IsolatedFile, data: bytes,
          filename: str, kind: str) -> Response:
    _log_download(request, p, access, record, kind)
    # octet-stream + nosniff: a downloaded .html or .svg is never rendered in our origin.
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": filetools.content_disposition(filename)})


def _log_download(request: Request, p: Portal, access: PortalAccess, record: IsolatedFile,
                  kind: str) -> None:
    client_ip = request.client.host if request.client else None
    p.store.record_download(DownloadRecord(at=p.now(), message_id=record.message_id, path=record.path,
                                           kind=kind[:300], client_ip=client_ip,
                                           recipient=access.recipient))
    log.info("portal download", extra={"message_id": record.message_id, "path": record.path,
                                       "action": kind.split(":")[0], "client_ip": client_ip})


def _macro_removable(record: IsolatedFile) -> bool:
    return (record.detected_type in filetools.OOXML_MACRO_TYPES
            and any(s.startswith("MACRO") or s == "VBA_STOMPING" for s in record.symbols)
            and "XLM_MACRO" not in record.symbols
            and record.verdict in (Verdict.RISKY, Verdict.SAFE))


# --- views -------------------------------------------------------------------------------------

def _file_view(record: IsolatedFile, lang: str) -> FileView:
    words = verdict_words(lang)
    actions: list[str] = []
    if record.blob_key is not None:
        if record.verdict in (Verdict.SAFE, Verdict.RISKY) and filetools.safe_copy_kind(record.detected_type):
            actions.append("safe")
        if record.verdict in (Verdict.SAFE, Verdict.RISKY):
            actions.append("original")
        if _macro_removable(record):
            actions.append("macro-removed")
        if record.verdict == Verdict.ENCRYPTED:
            actions.append("unlock")
        if record.verdict in (Verdict.SAFE, Verdict.RISKY) and filetools.previewable(record.detected_type):
            actions.append("preview")
    members = [{"name": str(m.get("name", "")), "verdict": str(m.get("verdict", "")),
                "verdict_label": words.get(str(m.get("verdict", "")), "")}
               for m in record.members[:200]] if record.verdict != Verdict.ENCRYPTED else []
    return FileView(path=record.path, filename=record.filename, size=record.size,
                    sha256=record.sha256, verdict=str(record.verdict),
                    verdict_label=words[str(record.verdict)], reasons=reasons(record.symbols, lang),
                    deleted=record.blob_key is None, actions=actions,
                    needs_confirm=record.verdict == Verdict.RISKY,
                    macro_free_name=filetools.macro_free_name(record.filename), members=members)


def _message_page(request: Request, p: Portal, token: str, access: PortalAccess,
                  message: PortalMessage, unlocked: dict[str, UnlockView] | None = None,
                  status: int = 200) -> Response:
    lang = language(request, message.language)
    t = translator(lang)
    views = [_file_view(f, lang) for f in p.store.files(message.id)]
    for view in views:
        if unlocked and view.path in unlocked:
            view.unlock = unlocked[view.path]
    hops = [{"flag": flag(h.get("country")), "country": h.get("country"), "ip": h.get("ip"),
             "name": h.get("from")} for h in message.route]
    countries = list(dict.fromkeys(str(h["country"]) for h in hops if h["country"]))
    warning = t("route.warning", countries=", ".join(countries)) if len(countries) > 1 else ""
    return page(request, "message.html", lang, {
        "m": message, "files": views, "hops": hops, "route_warning": warning,
        "expires": f"{access.expires_at:%Y-%m-%d %H:%M} UTC", "base": f"/m/{token}",
        "switch_url": f"/m/{token}"}, status)


def _rescan(p: Portal, message: PortalMessage, data: bytes, name: str) -> Any:
    from mailmoat.scan.engine import Engine
    from mailmoat.scan.lists import Lists

    engine = Engine(p.services.settings.limits, antivirus=p.services.antivirus)
    return engine.analyse(data, name, Lists.for_tenant(p.tenant(message)))


def _unlock(p: Portal, message: PortalMessage, record: IsolatedFile, password: str,
            lang: str) -> tuple[UnlockView, int, filetools.Decrypted | None]:
    """Decrypt in memory and analyse the plain content again. The password is neither stored
    nor logged; failed attempts are counted per file."""
    t = translator(lang)
    now = p.now()
    if p.store.attempts_since(message.id, record.path, now - ATTEMPTS_WINDOW) >= ATTEMPTS_MAX:
        return UnlockView(False, t("unlock.limited")), 429, None
    assert record.blob_key is not None
    data = p.services.blobs.get(record.blob_key)
    limits = p.services.settings.limits
    try:
        decrypted = filetools.decrypt(data, record.detected_type, password, limits)
    except filetools.WrongPassword:
        p.store.add_attempt(message.id, record.path, now)
        log.info("portal wrong password", extra={"message_id": message.id, "path": record.path})
        return UnlockView(False, t("unlock.wrong")), 400, None
    except filetools.Unsupported:
        return UnlockView(False, t("unlock.unsupported")), 422, None
    from mailmoat.scan.engine import Engine
    from mailmoat.scan.lists import Lists

    engine = Engine(limits, antivirus=p.services.antivirus)
    lists = Lists.for_tenant(p.tenant(message))
    words = verdict_words(lang)
    view = UnlockView(True, t("unlock.ok"), password=password, archive=decrypted.archive)
    for i, (name, content) in enumerate(decrypted.members):
        shown = name or record.filename
        result = engine.analyse(content, shown.rsplit("/", 1)[-1], lists)
        verdict = result.verdict
        view.members.append(MemberView(
            index=i, name=shown, size=len(content), verdict=str(verdict),
            verdict_label=words[str(verdict)], reasons=reasons(result.symbols, lang),
            downloadable=verdict in (Verdict.SAFE, Verdict.RISKY),
            needs_confirm=verdict == Verdict.RISKY))
    return view, 200, decrypted
