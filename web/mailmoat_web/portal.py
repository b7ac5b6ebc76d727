"""The recipient portal's pages under /m/{token}: the isolated message with its files, a preview."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from mailmoat.isolation import IsolatedFile, PortalAccess, resolve
from mailmoat.scan.macros import macro_free_name
from mailmoat.services.downloads import offer_for
from mailmoat.services.preview import preview as render_preview
from mailmoat_web.i18n import flag, reasons, translator, verdict_words
from mailmoat_web.pages import Answer, language, not_found, page

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.isolation import PortalMessage
    from mailmoat.pipeline import Services
    from mailmoat.ports import IsolationStore
    from mailmoat.ppap import OpenedFile
    from mailmoat.services.rescan import AntivirusLater

log = logging.getLogger("mailmoat.portal")

router = APIRouter(prefix="/m")


class Portal:
    """Everything a request needs, taken from the runtime's services."""

    def __init__(self, services: Services, later: AntivirusLater | None = None) -> None:
        self.services = services
        self.later = later  # an antivirus elsewhere, for a runtime without one (AWS)
        if services.isolation is None:  # a root without the isolated-file store serves no portal
            raise RuntimeError("the portal needs the isolated-file store (MAILMOAT_ISOLATED_FILES_TABLE)")
        self.store: IsolationStore = services.isolation

    def tenant(self, message: PortalMessage) -> TenantConfig:
        return self.services.config.tenant(message.tenant)

    def now(self) -> Any:
        return self.services.clock.now()


# --- who is asking for what -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Opened:
    """A valid token's message: unknown, malformed and expired tokens never get this far."""

    portal: Portal
    access: PortalAccess
    message: PortalMessage
    token: str

    def file(self, path: str) -> IsolatedFile | None:
        return next((f for f in self.portal.store.files(self.message.id) if f.path == path), None)


def opened(request: Request, token: str) -> Opened:
    """The token's message, else the 404 page (the same for every way a token is wrong)."""
    p = request.app.state.portal
    if isinstance(p, Portal):
        access = resolve(p.store, token, p.now())
        message = p.store.message(access.message_id) if access is not None else None
        if access is not None and message is not None:
            return Opened(p, access, message, token)
    raise Answer(not_found(request))


# --- views ----------------------------------------------------------------------------------------

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
    pending: bool = False  # being checked by the antivirus: "check again" later


@dataclass(slots=True)
class UnlockView:
    ok: bool
    message: str
    password: str = ""  # echoed only into the forms of this one no-store response
    archive: bool = True
    members: list[MemberView] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return any(m.pending for m in self.members)


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
    pdf: bool = False  # "Download as PDF" (convertible, kept, not danger, a converter here)
    # Sent to a sandbox: "analysing" until its verdict, "timeout" when none came in time.
    sandbox: str | None = None
    opened: OpenedView | None = None  # a password from mail opened it (mailmoat.ppap)


@dataclass(slots=True)
class OpenedView:
    """What a password found in mail opened: the members, checked, with no password anywhere."""

    message: str
    archive: bool
    members: list[MemberView] = field(default_factory=list)


def opened_view(opened: OpenedFile, lang: str) -> OpenedView:
    from mailmoat.services.downloads import offer

    t, words = translator(lang), verdict_words(lang)
    view = OpenedView(t("ppap.same_mail") if opened.same_mail else t("ppap.follow_up"),
                      archive=opened.archive)
    for m in opened.members:
        shown_offer = offer(m.verdict, stored=m.blob_key is not None)
        view.members.append(MemberView(
            index=m.index, name=m.name, size=m.size, verdict=str(m.verdict),
            verdict_label=words[str(m.verdict)], reasons=reasons(m.symbols, lang),
            downloadable=m.blob_key is not None and shown_offer.allows("original"),
            needs_confirm=shown_offer.needs_confirm))
    return view


def pdf_offered(record: IsolatedFile, services: Services) -> bool:
    from mailmoat.context import Verdict
    from mailmoat.convert import convertible

    return (services.converter is not None and record.stored and record.blob_key is not None
            and str(record.verdict) not in (Verdict.DANGER, Verdict.ANALYSING)
            and convertible(record.filename))


def file_view(record: IsolatedFile, lang: str) -> FileView:
    words = verdict_words(lang)
    offer = offer_for(record)
    members = [{"name": str(m.get("name", "")), "verdict": str(m.get("verdict", "")),
                "verdict_label": words.get(str(m.get("verdict", "")), "")}
               for m in record.members[:200]] if offer.lists_members else []
    return FileView(path=record.path, filename=record.filename, size=record.size,
                    sha256=record.sha256, verdict=str(record.verdict),
                    verdict_label=words[str(record.verdict)], reasons=reasons(record.symbols, lang),
                    deleted=not record.stored, actions=list(offer.actions),
                    needs_confirm=offer.needs_confirm,
                    macro_free_name=macro_free_name(record.filename), members=members,
                    sandbox=_sandbox_state(record))


def _sandbox_state(record: IsolatedFile) -> str | None:
    from mailmoat.context import Verdict

    if record.verdict != Verdict.ANALYSING:
        return None
    return "timeout" if "SANDBOX_TIMEOUT" in record.symbols else "analysing"


def message_page(request: Request, o: Opened, unlocked: dict[str, UnlockView] | None = None,
                 status: int = 200) -> Response:
    lang = language(request, o.message.language)
    t = translator(lang)
    records = o.portal.store.files(o.message.id)
    views = [file_view(f, lang) for f in records]
    for view, record in zip(views, records, strict=True):
        view.pdf = pdf_offered(record, o.portal.services)
        if "unlock" in view.actions:
            done = o.portal.store.opened(record.message_id, record.path)
            if done is not None:  # read on every request: a later follow-up shows on reload
                view.opened = opened_view(done, lang)
    for view in views:
        if unlocked and view.path in unlocked:
            view.unlock = unlocked[view.path]
    hops = [{"flag": flag(h.get("country")), "country": h.get("country"), "ip": h.get("ip"),
             "name": h.get("from")} for h in o.message.route]
    countries = list(dict.fromkeys(str(h["country"]) for h in hops if h["country"]))
    warning = t("route.warning", countries=", ".join(countries)) if len(countries) > 1 else ""
    return page(request, "message.html", lang, {
        "m": o.message, "files": views, "hops": hops, "route_warning": warning,
        "expires": f"{o.access.expires_at:%Y-%m-%d %H:%M} UTC", "base": f"/m/{o.token}",
        "switch_url": f"/m/{o.token}"}, status)


def refused(request: Request, lang: str, token: str) -> Response:
    return page(request, "error.html", lang, {"title_key": "file.no_download", "body_key": "",
                                                "back": f"/m/{token}"}, 403)


def warning(request: Request, lang: str, token: str, record: IsolatedFile, fields: dict[str, str],
            action: str = "download") -> Response:
    return page(request, "warning.html", lang, {
        "filename": record.filename, "action": f"/m/{token}/f/{record.path}/{action}",
        "fields": fields, "back": f"/m/{token}", "reasons": reasons(record.symbols, lang)})


# --- routes ---------------------------------------------------------------------------------------

@router.get("/{token}", response_class=HTMLResponse)
def messagepage(request: Request, o: Annotated[Opened, Depends(opened)]) -> Response:
    return message_page(request, o)


@router.get("/{token}/f/{path}/preview", response_class=HTMLResponse)
def preview(request: Request, path: str, o: Annotated[Opened, Depends(opened)]) -> Response:
    record = o.file(path)
    if record is None or record.blob_key is None or not offer_for(record).allows("preview"):
        return not_found(request)
    lang = language(request, o.message.language)
    try:
        shown = render_preview(o.portal.services.blobs.get(record.blob_key), record.detected_type,
                               o.portal.services.settings.limits)
    except Exception as exc:  # a file the renderer chokes on gets no preview, not a 500
        log.warning("preview failed", extra={"message_id": o.message.id, "path": path,
                                             "detail": type(exc).__name__})
        shown = None
    return page(request, "preview.html", lang, {
        "filename": record.filename, "preview": shown, "back": f"/m/{o.token}",
        "switch_url": f"/m/{o.token}/f/{path}/preview"}, 200 if shown is not None else 422)
