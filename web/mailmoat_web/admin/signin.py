"""Signing in to the console and out of it: the console's own password sign-in (local), the
Cognito managed login and its callback (AWS), and the console's home page."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from mailmoat_web.admin import oidc
from mailmoat_web.admin.access import console
from mailmoat_web.admin.console import AdminConsole, admin_from_claims, client_ip, console_for, current_admin
from mailmoat_web.admin.render import handoff, redirect, render, set_session, to_login
from mailmoat_web.admin.session import COOKIE_PATH, SESSION_COOKIE
from mailmoat_web.i18n import translator
from mailmoat_web.pages import csrf_ok, forbidden, language, not_found, page, secure

log = logging.getLogger("mailmoat.admin")

router = APIRouter()


@router.get("", include_in_schema=False)
@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    admin = current_admin(request)
    if admin is None:
        return to_login(request)
    if not admin.operator:
        return redirect(request, f"/admin/t/{admin.tenant}/trace")
    tenants = [t.name for t in console(request).runtime.services.config.tenants]
    return render(request, admin, None, "admin/tenants.html", {"tenants": tenants})


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    c = console_for(request)
    if c is None:
        return not_found(request)
    if c.uses_cognito:
        return _cognito_redirect(request, c)
    return page(request, "admin/login.html", language(request, "ja"),
                {"error": "", "email": "", "switch_url": "/admin/login"})


@router.post("/login")
def login(request: Request, csrf: str = Form(""), email: str = Form(""),
          password: str = Form("")) -> Response:
    c = console_for(request)
    if c is None or c.authenticator is None:
        return not_found(request)
    if not csrf_ok(request, csrf):
        return forbidden(request)
    lang = language(request, "ja")
    result = c.authenticator.sign_in(email, password, client_ip(request))
    if result.outcome != "ok" or result.account is None:
        # The trail gets failures of real accounts under their tenant; others under "".
        known = c.accounts.account(email.strip().lower()) if c.accounts and len(email) <= 320 else None
        c.record(request, email.strip().lower()[:320], known.tenant if known else "",
                 "login.limited" if result.outcome == "limited" else "login.failed")
        status = 429 if result.outcome == "limited" else 401
        key = "admin.login.limited" if result.outcome == "limited" else "admin.login.invalid"
        return page(request, "admin/login.html", lang, {
            "error": translator(lang)(key), "email": email[:320], "switch_url": "/admin/login"},
            status)
    account = result.account
    c.record(request, account.email, account.tenant, "login")
    response = RedirectResponse("/admin/", status_code=303)
    set_session(request, response, c.sessions.issue(account.email, account.password_hash))
    return response


@router.get("/oauth2/callback", response_class=HTMLResponse)
def oauth2_callback(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
    """Cognito sends the browser back here. The one GET that changes state: it creates the
    session, and only after the state, the code exchange and the ID token all checked out."""
    c = console_for(request)
    if c is None or not c.uses_cognito:
        return not_found(request)
    lang = language(request, "ja")
    if c.cognito is None:
        return handoff(request, lang, "admin.sso.unavailable", "", "", status=503)
    pending = c.sign_in_flow.load(request.cookies.get(oidc.FLOW_COOKIE))
    try:
        if error:  # the user cancelled, or Cognito refused: say so, do not loop
            raise oidc.SignInFailed(f"authorization server answered error={error[:60]!r}")
        claims = oidc.complete(c.cognito, pending, state[:512], code, _callback_url(c))
        admin = admin_from_claims(claims)
        if admin is None:
            raise oidc.SignInFailed("ID token names no tenant (custom:tenant) or operator group")
        tenants = {t.name for t in c.runtime.services.config.tenants}
        if not admin.operator and admin.tenant not in tenants:
            raise oidc.SignInFailed(f"ID token names an unknown tenant {admin.tenant[:80]!r}")
    except oidc.SignInFailed as exc:
        log.warning("admin sign-in refused: %s", exc)
        if pending is not None:  # a real attempt; a bare hit on this URL is only logged
            c.record(request, "", "", "login.failed", detail=str(exc)[:200])
        response = handoff(request, lang, "admin.sso.failed", "/admin/login", "admin.sso.retry",
                           status=401, refresh=False)
        _drop_flow_cookie(request, response)
        return response
    c.record(request, admin, admin.tenant, "login")
    # A page, not a redirect: the session cookie is SameSite=Strict, and a browser leaves it
    # off a redirect that began on Cognito's site, which would send the admin round again.
    response = handoff(request, lang, "admin.sso.signed_in", "/admin/", "admin.sso.continue")
    set_session(request, response, c.sessions.issue_federated(admin.email, admin.tenant))
    _drop_flow_cookie(request, response)
    return response


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    if not csrf_ok(request, csrf):
        return forbidden(request)
    admin = current_admin(request)
    c = console_for(request)
    if admin is not None and c is not None:
        # The signed cookie alone would stay valid until idle expiry: end it server-side.
        if c.accounts is not None and not c.uses_cognito:
            c.accounts.end_sessions(admin.email, int(c.sessions.clock() * 1000))
        elif c.federated_sessions is not None:
            c.federated_sessions.end_sessions(admin.email, int(c.sessions.clock() * 1000))
        c.record(request, admin, admin.tenant, "logout")
    if c is not None and c.cognito is not None:
        # Cognito's own session would sign the admin straight back in: end it too. A page
        # that moves on, since CSP form-action would stop a form's redirect to Cognito.
        home_url = c.runtime.services.settings.portal_url.rstrip("/") + "/admin/"
        target = oidc.logout_url(c.cognito, home_url)
        response = handoff(request, language(request, "ja"), "admin.sso.signed_out", target,
                           "admin.sso.to_logout")
    else:
        response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=secure(request),
                           httponly=True, samesite="strict")
    return response


def _callback_url(c: AdminConsole) -> str:
    # From the configured base URL, never the Host header: it must equal a CallbackURL of the
    # app client exactly, and Cognito compares it again at the token endpoint.
    return c.runtime.services.settings.portal_url.rstrip("/") + oidc.CALLBACK_PATH


def _cognito_redirect(request: Request, c: AdminConsole) -> Response:
    """To the managed login, with this sign-in's state, nonce and PKCE verifier in a signed
    cookie. SameSite=Lax: it must come back on Cognito's top-level redirect to the callback."""
    if c.cognito is None:
        return handoff(request, language(request, "ja"), "admin.sso.unavailable", "", "", status=503)
    url, pending = oidc.begin(c.cognito, _callback_url(c))
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(oidc.FLOW_COOKIE, c.sign_in_flow.dump(pending), max_age=oidc.FLOW_SECONDS,
                        path=oidc.FLOW_COOKIE_PATH, httponly=True, samesite="lax", secure=secure(request))
    return response


def _drop_flow_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(oidc.FLOW_COOKIE, path=oidc.FLOW_COOKIE_PATH, secure=secure(request),
                           httponly=True, samesite="lax")
