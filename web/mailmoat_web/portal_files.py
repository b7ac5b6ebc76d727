"""What a recipient does with one isolated file (POSTs under /m/{token}/f/{path}): download it,
unlock it with a password, download what the password opened, or what a password found in mail
opened (PPAP pairing, mailmoat.ppap)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from mailmoat.attempts import source_network
from mailmoat.isolation import IsolatedFile
from mailmoat.services.downloads import (
    Download,
    NoDownload,
    content_disposition,
    delivered,
    offer_for,
    prepare,
    record_download,
)
from mailmoat.services.unlock import Unlocked, unlock
from mailmoat_web.i18n import reasons, translator, verdict_words
from mailmoat_web.pages import Answer, csrf_ok, forbidden, language, not_found, page
from mailmoat_web.portal import (
    MemberView,
    Opened,
    UnlockView,
    message_page,
    opened,
    pdf_offered,
    refused,
    warning,
)

router = APIRouter(prefix="/m")
log = logging.getLogger("mailmoat.portal")

_UNLOCK_STATUS = {"ok": 200, "limited": 429, "wrong": 400, "unsupported": 422}


@dataclass(frozen=True, slots=True)
class Target:
    """The file a POST is about, after the CSRF check, the token and the file all held."""

    opened: Opened
    record: IsolatedFile


def _client(request: Request) -> str | None:
    """The client address, as the portal's password-attempt limits see it."""
    return request.client.host if request.client else None


def _target(request: Request, token: str, path: str, csrf: str, action: str | None, *,
            original: bool = True) -> Target:
    """Every POST starts here: CSRF first, then the token, then the file (404 alike); a route
    that hands out the original (or what it holds) then checks the tenant's original_from_ips."""
    if not csrf_ok(request, csrf):
        raise Answer(forbidden(request))
    o = opened(request, token)
    record = o.file(path)
    if record is None or record.blob_key is None or (
            action is not None and not offer_for(record).allows(action)):
        raise Answer(not_found(request))
    tenant = o.portal.tenant(o.message)
    if original and not tenant.original_allowed(_client(request)):
        log.warning("original refused: client outside original_from_ips", extra={
            "tenant": tenant.name, "message_id": o.message.id, "path": record.path,
            "route": request.url.path.rsplit("/", 1)[-1],
            "client_network": source_network(_client(request))})
        lang = language(request, o.message.language)
        raise Answer(page(request, "error.html", lang, {
            "title_key": "file.original_network", "body_key": "", "back": f"/m/{token}"}, 403))
    return Target(o, record)


def posted_file(request: Request, token: str, path: str, csrf: str = Form("")) -> Target:
    return _target(request, token, path, csrf, None)


def posted_encrypted(request: Request, token: str, path: str, csrf: str = Form("")) -> Target:
    return _target(request, token, path, csrf, "unlock")


def posted_pdf(request: Request, token: str, path: str, csrf: str = Form("")) -> Target:
    return _target(request, token, path, csrf, None, original=False)


def _send(request: Request, target: Target, download: Download) -> Response:
    o = target.opened
    # prepare() has decided already; what the unlock service opened is decided here.
    download = delivered(o.portal.services.blobs, download)
    record_download(o.portal.store, o.portal.now(), o.access, target.record, download.kind,
                    request.client.host if request.client else None)
    if download.url is not None:  # only handed out after every check above
        return RedirectResponse(download.url, status_code=303)
    # octet-stream + nosniff: a downloaded .html or .svg is never rendered in our origin.
    return Response(download.data, media_type="application/octet-stream", headers={
        "Content-Disposition": content_disposition(download.filename)})


def _unlocked(request: Request, target: Target, password: str,
              lang: str) -> tuple[Unlocked, UnlockView, int]:
    o = target.opened
    done = unlock(o.portal.services, o.portal.tenant(o.message), target.record,
                  password, o.portal.later, request.client.host if request.client else None)
    t, words = translator(lang), verdict_words(lang)
    view = UnlockView(done.outcome == "ok", t(f"unlock.{done.outcome}"),
                      password=password if done.outcome == "ok" else "", archive=done.archive)
    view.members = [MemberView(
        index=f.index, name=f.name, size=f.size, verdict=str(f.verdict),
        verdict_label=t("verdict.pending") if f.pending else words[str(f.verdict)],
        reasons=reasons(f.symbols, lang), downloadable=f.offer.allows("original"),
        needs_confirm=f.offer.needs_confirm, pending=f.pending)
        for f in done.files]
    return done, view, _UNLOCK_STATUS[done.outcome]


@router.post("/{token}/f/{path}/download")
def download(request: Request, target: Annotated[Target, Depends(posted_file)],
             kind: str = Form("original"), confirm: str = Form("")) -> Response:
    o, record = target.opened, target.record
    lang = language(request, o.message.language)
    offer = offer_for(record)
    if kind == "original" and offer.allows(kind) and offer.needs_confirm and confirm != "1":
        return warning(request, lang, o.token, record, {"kind": "original"})
    try:
        chosen = prepare(o.portal.services, o.portal.tenant(o.message), record, kind)
    except NoDownload:
        return refused(request, lang, o.token)
    return _send(request, target, chosen)


@router.post("/{token}/f/{path}/pdf")
def as_pdf(request: Request, target: Annotated[Target, Depends(posted_pdf)]) -> Response:
    """The file converted to PDF on demand, scanned again, as an attachment; from anywhere."""
    from mailmoat.context import Verdict
    from mailmoat.convert import ConversionError, pdf_name
    from mailmoat.services.rescan import rescanner

    o, record = target.opened, target.record
    lang = language(request, o.message.language)
    services = o.portal.services
    if not pdf_offered(record, services) or record.blob_key is None:
        return not_found(request)
    tenant = o.portal.tenant(o.message)
    name = pdf_name(record.filename)
    reason = ""
    try:
        assert services.converter is not None  # pdf_offered checked it
        pdf = services.converter.convert(services.blobs.get(record.blob_key), record.filename)
        result = rescanner(services, tenant)(pdf, name)
        if result.verdict != Verdict.SAFE:
            reason = f"the PDF is {result.verdict}: " + ", ".join(sorted({h.symbol for h in result.hits}))
    except ConversionError as exc:
        reason = str(exc)[:200]
    except Exception as exc:  # a converter crash is an error page, never a 500
        reason = f"{type(exc).__name__}: {exc}"[:200]
    if reason:
        log.warning("portal PDF conversion failed", extra={
            "tenant": tenant.name, "message_id": o.message.id, "path": record.path,
            "reason": reason})
        return page(request, "error.html", lang, {
            "title_key": "file.pdf_failed", "body_key": "", "back": f"/m/{o.token}"}, 422)
    record_download(o.portal.store, o.portal.now(), o.access, record, "pdf", _client(request))
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": content_disposition(name), "X-Content-Type-Options": "nosniff"})


@router.post("/{token}/f/{path}/unlock")
def unlock_file(request: Request, target: Annotated[Target, Depends(posted_encrypted)],
                password: str = Form("")) -> Response:
    o = target.opened
    _done, view, status = _unlocked(request, target, password, language(request, o.message.language))
    return message_page(request, o, {target.record.path: view}, status)


@router.post("/{token}/f/{path}/member")
def member(request: Request, target: Annotated[Target, Depends(posted_encrypted)],
           password: str = Form(""), index: int = Form(-1), confirm: str = Form("")) -> Response:
    o, record = target.opened, target.record
    lang = language(request, o.message.language)
    done, view, status = _unlocked(request, target, password, lang)
    if done.outcome != "ok" or not 0 <= index < len(done.files):
        return message_page(request, o, {record.path: view}, status if status != 200 else 404)
    shown = done.files[index]
    if not shown.offer.allows("original"):
        return refused(request, lang, o.token)
    if shown.offer.needs_confirm and confirm != "1":
        return warning(request, lang, o.token, record,
                       {"index": str(index), "password": password}, action="member")
    return _send(request, target, shown.download)


@router.post("/{token}/f/{path}/opened")
def opened_member(request: Request, target: Annotated[Target, Depends(posted_encrypted)],
                  index: int = Form(-1), confirm: str = Form("")) -> Response:
    """A member of a file a password from mail opened: its verdict decides, as for unlock."""
    from mailmoat.services.downloads import offer

    o, record = target.opened, target.record
    lang = language(request, o.message.language)
    done = o.portal.store.opened(record.message_id, record.path)
    shown = next((m for m in done.members if m.index == index), None) if done else None
    if shown is None:
        return not_found(request)
    allowed = offer(shown.verdict, stored=shown.blob_key is not None)
    if shown.blob_key is None or not allowed.allows("original"):
        return refused(request, lang, o.token)
    if allowed.needs_confirm and confirm != "1":
        return warning(request, lang, o.token, record, {"index": str(index)}, action="opened")
    name = shown.name.rsplit("/", 1)[-1]
    download = Download(f"opened:{shown.name}" if done and done.archive else "opened", name)
    return _send_stored(request, target, download, shown.blob_key, shown.size)


def _send_stored(request: Request, target: Target, download: Download, key: str,
                 size: int) -> Response:
    o = target.opened
    download = delivered(o.portal.services.blobs, download, stored=key, size=size)
    record_download(o.portal.store, o.portal.now(), o.access, target.record, download.kind,
                    _client(request))
    if download.url is not None:
        return RedirectResponse(download.url, status_code=303)
    return Response(download.data, media_type="application/octet-stream", headers={
        "Content-Disposition": content_disposition(download.filename)})
