"""How console pages answer: rendered with the tenant's language and navigation, the session
signed again on every response (idle expiry slides), redirects, the sign-in handoff page."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from mailmoat.config import TenantConfig
from mailmoat_web.admin import i18n as _catalog  # noqa: F401  (registers the console's text)
from mailmoat_web.admin.console import Admin, console_for
from mailmoat_web.admin.session import COOKIE_PATH, IDLE_SECONDS, SESSION_COOKIE
from mailmoat_web.pages import language, not_found, page, secure

PAGE_SIZE = 50


def render(request: Request, admin: Admin, tenant: TenantConfig | None, template: str,
           values: dict[str, Any], status: int = 200) -> Response:
    lang = language(request, tenant.language if tenant else "ja")
    values = {"admin": admin, "tenant": tenant.name if tenant else "", "nav": _nav(tenant),
              "operator": admin.operator, "switch_url": request.url.path, **values}
    return refreshed(request, page(request, template, lang, values, status))


def _nav(tenant: TenantConfig | None) -> list[tuple[str, str]]:
    if tenant is None:
        return []
    base = f"/admin/t/{tenant.name}"
    return [(f"{base}/dashboard", "admin.nav.dashboard"),
            (f"{base}/trace", "admin.nav.trace"), (f"{base}/held", "admin.nav.held"),
            (f"{base}/isolated", "admin.nav.isolated"), (f"{base}/recipients", "admin.nav.recipients"),
            (f"{base}/policy", "admin.nav.policy"), (f"{base}/audit", "admin.nav.audit")]


def set_session(request: Request, response: Response, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=IDLE_SECONDS, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=secure(request))


def refreshed(request: Request, response: Response) -> Response:
    """Sign the session again, so the idle expiry counts from this request."""
    session = getattr(request.state, "admin_session", None)
    c = console_for(request)
    if session is not None and c is not None:
        set_session(request, response, c.sessions.dump(session))
    return response


def redirect(request: Request, url: str) -> Response:
    return refreshed(request, RedirectResponse(url, status_code=303))


def to_login(request: Request) -> Response:
    c = console_for(request)
    if c is None:
        return not_found(request)
    return RedirectResponse("/admin/login", status_code=303)


def handoff(request: Request, lang: str, message_key: str, next_url: str, link_key: str, *,
            status: int = 200, refresh: bool = True) -> Response:
    return page(request, "admin/handoff.html", lang, {
        "message_key": message_key, "next_url": next_url, "link_key": link_key,
        # The language switch goes to the console, never back to a one-time callback URL.
        "refresh": refresh and bool(next_url), "failed": status >= 400, "switch_url": "/admin/"},
        status)


# --- lists in pages -------------------------------------------------------------------------------

def url(path: str, params: dict[str, Any]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def page_number(request: Request) -> int:
    try:
        return max(1, min(10_000, int(request.query_params.get("page") or 1)))
    except ValueError:
        return 1


def pager(path: str, params: dict[str, Any], page_no: int, more: bool) -> dict[str, str]:
    """The previous and next page links of a list (empty where there is none)."""
    return {"prev_url": url(path, {**params, "page": page_no - 1}) if page_no > 1 else "",
            "next_url": url(path, {**params, "page": page_no + 1}) if more else ""}
