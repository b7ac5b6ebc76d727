"""A tenant's recipients: search, edit one, switch spam filtering, CSV import (checked first,
then applied) and export."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile as StarletteUploadFile

from mailmoat.ports import Recipient
from mailmoat.services.downloads import content_disposition
from mailmoat_web.admin.access import PostedScope, Scope, TenantScope, posted_scope, recipient_of
from mailmoat_web.admin.render import redirect, refreshed, render
from mailmoat_web.i18n import translator
from mailmoat_web.pages import language, not_found

router = APIRouter()

MAX_CSV_BYTES = 20 * 1024 * 1024
MAX_FIELD = 500  # recipient text fields
_EDITABLE = ("name", "organisation", "department", "title", "memo", "spam_filter")


@router.get("/t/{tenant}/recipients", response_class=HTMLResponse)
def recipients(request: Request, tenant: str, s: TenantScope) -> Response:
    q = request.query_params.get("q", "")[:200]
    everyone = s.c.runtime.services.directory.recipients(tenant)
    found = [r for r in everyone if _recipient_matches(r, q)]
    return render(request, s.admin, s.cfg, "admin/recipients.html", {
        "q": q, "rows": found[:500], "total": len(found), "truncated": len(found) > 500})


@router.get("/t/{tenant}/recipients/{address}", response_class=HTMLResponse)
def recipient_form(request: Request, tenant: str, address: str, s: TenantScope) -> Response:
    found = recipient_of(s.c, tenant, address)
    if found is None:
        return not_found(request)
    return render(request, s.admin, s.cfg, "admin/recipient.html", {"r": found, "saved": False})


@router.post("/t/{tenant}/recipients/{address}")
def recipient_save(request: Request, tenant: str, address: str, s: PostedScope,
                   name: str = Form(""), organisation: str = Form(""), department: str = Form(""),
                   title: str = Form(""), memo: str = Form(""), spam_filter: str = Form("")
                   ) -> Response:
    found = recipient_of(s.c, tenant, address)
    if found is None:
        return not_found(request)
    updated = dataclasses.replace(
        found, name=_clean(name), organisation=_clean(organisation), department=_clean(department),
        title=_clean(title), memo=_clean(memo, 2000), spam_filter=spam_filter == "1")
    changed = [f for f in _EDITABLE if getattr(found, f) != getattr(updated, f)]
    if changed:
        s.c.runtime.services.directory.upsert_recipients([updated])
        s.c.record(request, s.admin, tenant, "recipient.edit", found.address, ", ".join(changed))
    return render(request, s.admin, s.cfg, "admin/recipient.html", {"r": updated, "saved": True})


@router.post("/t/{tenant}/recipients/{address}/spam")
def recipient_spam(request: Request, tenant: str, address: str, s: PostedScope,
                   spam_filter: str = Form("")) -> Response:
    found = recipient_of(s.c, tenant, address)
    if found is None:
        return not_found(request)
    wanted = spam_filter == "1"
    if found.spam_filter != wanted:
        s.c.runtime.services.directory.upsert_recipients([dataclasses.replace(found, spam_filter=wanted)])
        s.c.record(request, s.admin, tenant, "recipient.spam", found.address, "on" if wanted else "off")
    return redirect(request, f"/admin/t/{tenant}/recipients")


@router.get("/t/{tenant}/import", response_class=HTMLResponse)
def import_form(request: Request, tenant: str, s: TenantScope) -> Response:
    return render(request, s.admin, s.cfg, "admin/import.html", {"result": None, "csv_text": "",
                                                                   "replace": False})


@router.post("/t/{tenant}/import")
async def import_csv_post(request: Request, tenant: str) -> Response:
    # Parsed here, not by Form(): the checked text comes back with "apply" and may be far
    # larger than Starlette's 1 MB default for a form field.
    async with request.form(max_files=1, max_fields=10, max_part_size=2 * MAX_CSV_BYTES) as form:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("file")
        data = await upload.read(MAX_CSV_BYTES + 1) \
            if isinstance(upload, StarletteUploadFile) and upload.filename else None
    s = posted_scope(request, tenant, fields.get("csrf", ""))
    uploaded = data is not None
    if data is None:
        data = fields.get("csv_text", "").encode("utf-8")  # the dry run's text, sent back
    # The text may be longer than the upload it came from (CP932 → UTF-8), never twice as long.
    if len(data) > MAX_CSV_BYTES * (1 if uploaded else 2):
        too_big = translator(language(request, s.cfg.language))("admin.import.too_big",
                                                                mb=MAX_CSV_BYTES // 1_000_000)
        return render(request, s.admin, s.cfg, "admin/import.html", {
            "result": None, "csv_text": "", "replace": False, "too_big": too_big}, 413)
    return _import(request, s, data, replace=fields.get("replace") == "1",
                   apply=fields.get("step") == "apply")


def _import(request: Request, s: Scope, data: bytes, *, replace: bool, apply: bool) -> Response:
    from mailmoat.local.users import import_csv

    tenant = s.cfg.name
    result = import_csv(s.c.runtime.services.directory, data, tenant=tenant, replace=replace,
                        dry_run=not apply)
    if result.applied:
        s.c.record(request, s.admin, tenant, "recipients.import", "",
                   f"{len(result.added)} added, {len(result.changed)} changed, "
                   f"{len(result.removed)} removed")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp932", "replace")  # shown back and re-posted as UTF-8
    return render(request, s.admin, s.cfg, "admin/import.html", {
        "result": result, "csv_text": "" if result.applied else text, "replace": replace},
        422 if result.errors else 200)


@router.post("/t/{tenant}/export")
def export(request: Request, tenant: str, s: PostedScope, encoding: str = Form("utf-8-sig")
           ) -> Response:
    from mailmoat.local.users import export_csv

    codec = encoding if encoding in ("utf-8", "utf-8-sig", "cp932") else "utf-8-sig"
    body = export_csv(s.c.runtime.services.directory, tenant=tenant).encode(codec, "replace")
    s.c.record(request, s.admin, tenant, "recipients.export", "", codec)
    response = Response(body, media_type="text/csv", headers={
        "Content-Disposition": content_disposition(f"recipients-{tenant}.csv")})
    return refreshed(request, response)


def _recipient_matches(r: Recipient, q: str) -> bool:
    if not q:
        return True
    needle = q.casefold()
    return any(needle in str(v).casefold() for v in (r.address, r.name, r.organisation, r.department,
                                                      r.title, r.memo))


def _clean(value: str, limit: int = MAX_FIELD) -> str:
    """One line (memo: several), no control characters, bounded."""
    kept = "".join(ch for ch in value if ch.isprintable() or (limit > MAX_FIELD and ch == "\n"))
    return kept.strip()[:limit]
