"""The admin console's routes under /admin: sign-in, trace, held mail, isolated files,
recipients, tenant policy and the audit trail. Every tenant-scoped URL names its tenant, and an
admin of another tenant gets the same 404 as a guessed id (admin/access.py)."""

from __future__ import annotations

from fastapi import APIRouter

from mailmoat_web.admin import audit_trail, dashboard, isolated, policy, recipients, signin, trace


def admin_console_router() -> APIRouter:
    router = APIRouter()
    for feature in (signin, dashboard, trace, isolated, recipients, policy, audit_trail):
        router.include_router(feature.router, prefix="/admin")
    return router
