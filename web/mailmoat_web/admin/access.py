"""Who may see which tenant's console pages: the gates every tenant-scoped route depends on, and
the lookups that give another tenant's message, file or recipient the same 404 as a guessed id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, Request

from mailmoat.config import TenantConfig
from mailmoat.isolation import PortalMessage
from mailmoat.ports import MessageRecord, Recipient
from mailmoat_web.admin.console import Admin, AdminConsole, console_for, current_admin
from mailmoat_web.admin.render import to_login
from mailmoat_web.pages import Answer, csrf_ok, forbidden, not_found


@dataclass(frozen=True, slots=True)
class Scope:
    """A signed-in admin on a tenant they may manage."""

    c: AdminConsole
    admin: Admin
    cfg: TenantConfig


def console(request: Request) -> AdminConsole:
    c = console_for(request)
    assert c is not None  # current_admin() returned someone, so the console exists
    return c


def tenant_scope(request: Request, tenant: str) -> Scope:
    """A GET's gate: signed in, else to the sign-in page; another tenant's, or no such tenant,
    is the same 404 as a wrong id."""
    admin = current_admin(request)
    if admin is None:
        raise Answer(to_login(request))
    c = console(request)
    cfg = next((t for t in c.runtime.services.config.tenants if t.name == tenant), None)
    if cfg is None or not admin.may_manage(tenant):
        raise Answer(not_found(request))
    return Scope(c, admin, cfg)


def posted_scope(request: Request, tenant: str, csrf: str = Form("")) -> Scope:
    """Every POST: CSRF first, then the session (no redirect dance for a POST), then the tenant.
    Routes that read their form themselves call it with the posted `csrf`."""
    if not csrf_ok(request, csrf) or current_admin(request) is None:
        raise Answer(forbidden(request))
    return tenant_scope(request, tenant)


TenantScope = Annotated[Scope, Depends(tenant_scope)]
PostedScope = Annotated[Scope, Depends(posted_scope)]


def message_of(c: AdminConsole, tenant: str, message_id: str) -> MessageRecord | None:
    if len(message_id) > 200:
        return None
    record = c.runtime.services.log.get(message_id)
    return record if record is not None and record.tenant == tenant else None


def isolated_of(c: AdminConsole, tenant: str, message_id: str) -> PortalMessage | None:
    if len(message_id) > 200:
        return None
    found = c.isolation.message(message_id)
    return found if found is not None and found.tenant == tenant else None


def recipient_of(c: AdminConsole, tenant: str, address: str) -> Recipient | None:
    if len(address) > 320:
        return None
    found = c.runtime.services.directory.recipient(address.lower())
    # The directory may answer for an alias; the console edits the primary row only.
    if found is None or found.tenant != tenant or found.address != address.lower():
        return None
    return found
