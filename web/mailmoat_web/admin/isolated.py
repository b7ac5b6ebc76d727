"""A tenant's isolated files and the portal links that reach them; revoking a link."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from mailmoat_web.admin.access import PostedScope, TenantScope, isolated_of
from mailmoat_web.admin.render import PAGE_SIZE, page_number, pager, redirect, render
from mailmoat_web.pages import not_found

router = APIRouter()


@router.get("/t/{tenant}/isolated", response_class=HTMLResponse)
def isolated(request: Request, tenant: str, s: TenantScope) -> Response:
    page_no = page_number(request)
    store = s.c.isolation
    found = store.tenant_messages(tenant, limit=PAGE_SIZE + 1, offset=(page_no - 1) * PAGE_SIZE)
    items = [{"m": m, "files": store.files(m.id), "links": store.links(m.id)} for m in found[:PAGE_SIZE]]
    return render(request, s.admin, s.cfg, "admin/isolated.html", {
        "items": items, "page_no": page_no, "revoked": request.query_params.get("done") == "revoke",
        **pager(f"/admin/t/{tenant}/isolated", {}, page_no, len(found) > PAGE_SIZE)})


@router.post("/t/{tenant}/isolated/{message_id}/revoke")
def revoke(request: Request, tenant: str, message_id: str, s: PostedScope,
           recipient: str = Form("")) -> Response:
    portal_message = isolated_of(s.c, tenant, message_id)
    if portal_message is None or not s.c.isolation.revoke(portal_message.id, recipient[:320]):
        return not_found(request)
    s.c.record(request, s.admin, tenant, "isolation.revoke", portal_message.id, recipient[:320])
    return redirect(request, f"/admin/t/{tenant}/isolated?done=revoke")
