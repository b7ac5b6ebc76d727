"""The tenant's audit trail: who did what in the console, newest first."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from mailmoat_web.admin.access import TenantScope
from mailmoat_web.admin.render import PAGE_SIZE, page_number, pager, render

router = APIRouter()


@router.get("/t/{tenant}/audit", response_class=HTMLResponse)
def audit_trail(request: Request, tenant: str, s: TenantScope) -> Response:
    page_no = page_number(request)
    entries = s.c.audit_log.entries(tenant, limit=PAGE_SIZE + 1, offset=(page_no - 1) * PAGE_SIZE)
    return render(request, s.admin, s.cfg, "admin/audit.html", {
        "entries": entries[:PAGE_SIZE], "page_no": page_no,
        **pager(f"/admin/t/{tenant}/audit", {}, page_no, len(entries) > PAGE_SIZE)})
