"""The admin console's routes under /admin: sign-in, trace, held mail, isolated files,
recipients, tenant policy and the audit trail. Every tenant-scoped URL names its tenant, and an
admin of another tenant gets the same 404 as a guessed id."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import UploadFile as StarletteUploadFile

from mailmoat.admin.accounts import ALL_TENANTS
from mailmoat.admin.operations import REDRIVABLE_STATES, redrive
from mailmoat.admin.policy import POLICY_FIELDS, PolicyError, policy_of, replace_tenant, with_policy
from mailmoat.config import TenantConfig
from mailmoat.isolation import PortalMessage
from mailmoat.ports import MessageRecord, Recipient, TraceQuery
from mailmoat.runtime import raw_key
from mailmoat_web import files as filetools
from mailmoat_web.admin import i18n as _catalog  # noqa: F401  (registers the console's text)
from mailmoat_web.admin import oidc
from mailmoat_web.admin.console import (
    Admin,
    AdminConsole,
    admin_from_claims,
    client_ip,
    console_for,
    current_admin,
)
from mailmoat_web.admin.session import COOKIE_PATH, IDLE_SECONDS, SESSION_COOKIE
from mailmoat_web.i18n import flag, translator
from mailmoat_web.pages import csrf_ok, forbidden, language, not_found, page, secure

log = logging.getLogger("mailmoat.admin")

PAGE_SIZE = 50
STATES = ("accepted", "processing", "deferred", "delivered", "quarantined", "dropped", "held", "failed")
DISPOSITIONS = ("deliver", "quarantine", "drop", "held")
VERDICTS = ("safe", "risky", "encrypted", "unsupported", "danger")
RULE_ACTIONS = ("isolate", "delete", "convert-pdf", "remove-macros", "html-to-text", "keep")
MAX_CSV_BYTES = 20 * 1024 * 1024
MAX_FIELD = 500  # recipient text fields
RULE_ROWS_EXTRA = 1  # empty rows offered for a new rule


def admin_console_router() -> APIRouter:
    router = APIRouter(prefix="/admin")

    # --- sign-in ------------------------------------------------------------------------------
    @router.get("", include_in_schema=False)
    @router.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        admin = current_admin(request)
        if admin is None:
            return _to_login(request)
        if not admin.operator:
            return _redirect(request, f"/admin/t/{admin.tenant}/trace")
        c = _console(request)
        tenants = [t.name for t in c.runtime.services.config.tenants]
        return _render(request, admin, None, "admin/tenants.html", {"tenants": tenants})

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
        _set_session(request, response, c.sessions.issue(account.email, account.password_hash))
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
            return _handoff(request, lang, "admin.sso.unavailable", "", "", status=503)
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
            response = _handoff(request, lang, "admin.sso.failed", "/admin/login", "admin.sso.retry",
                                status=401, refresh=False)
            _drop_flow_cookie(request, response)
            return response
        c.record(request, admin, admin.tenant, "login")
        # A page, not a redirect: the session cookie is SameSite=Strict, and a browser leaves it
        # off a redirect that began on Cognito's site, which would send the admin round again.
        response = _handoff(request, lang, "admin.sso.signed_in", "/admin/", "admin.sso.continue")
        _set_session(request, response, c.sessions.issue_federated(admin.email, admin.tenant))
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
            home = c.runtime.services.settings.portal_url.rstrip("/") + "/admin/"
            target = oidc.logout_url(c.cognito, home)
            response = _handoff(request, language(request, "ja"), "admin.sso.signed_out", target,
                                "admin.sso.to_logout")
        else:
            response = RedirectResponse("/admin/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=secure(request),
                               httponly=True, samesite="strict")
        return response

    # --- message trace --------------------------------------------------------------------------
    @router.get("/t/{tenant}/trace", response_class=HTMLResponse)
    def trace(request: Request, tenant: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        form = {k: request.query_params.get(k, "")[:200] for k in (
            "sender", "recipient", "subject", "since", "until", "state", "disposition", "verdict",
            "symbol")}
        page_no = _int(request.query_params.get("page"), 1, 1, 10_000)
        query, problems = _trace_query(tenant, form, page_no)
        records = c.runtime.services.log.search(query) if not problems else []
        more = len(records) > PAGE_SIZE
        shown = [_row(r) for r in records[:PAGE_SIZE]]
        base = {k: v for k, v in form.items() if v}
        return _render(request, admin, cfg, "admin/trace.html", {
            "form": form, "rows": shown, "problems": problems, "states": STATES,
            "dispositions": DISPOSITIONS, "verdicts": VERDICTS, "page_no": page_no,
            "prev_url": _url(f"/admin/t/{tenant}/trace", {**base, "page": page_no - 1})
            if page_no > 1 else "",
            "next_url": _url(f"/admin/t/{tenant}/trace", {**base, "page": page_no + 1}) if more else ""})

    @router.get("/t/{tenant}/messages/{message_id}", response_class=HTMLResponse)
    def message(request: Request, tenant: str, message_id: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        record = _message_of(c, tenant, message_id)
        if record is None:
            return not_found(request)
        done = request.query_params.get("done") == "redrive"
        return _render(request, admin, cfg, "admin/message.html", {**_detail(c, record), "redriven": done})

    @router.post("/t/{tenant}/messages/{message_id}/raw")
    def download_raw(request: Request, tenant: str, message_id: str, csrf: str = Form("")) -> Response:
        scope = _posted(request, tenant, csrf)
        if isinstance(scope, Response):
            return scope
        c, admin, _cfg = scope
        record = _message_of(c, tenant, message_id)
        if record is None:
            return not_found(request)
        try:
            data = c.runtime.services.blobs.get(raw_key(record.id))
        except (FileNotFoundError, KeyError):
            return not_found(request)
        c.record(request, admin, tenant, "message.download", record.id, f"{len(data)} bytes")
        # octet-stream + nosniff: the original is never rendered in the console's origin.
        response = Response(data, media_type="application/octet-stream", headers={
            "Content-Disposition": filetools.content_disposition(f"{record.id}.eml")})
        return _refreshed(request, response)

    @router.post("/t/{tenant}/messages/{message_id}/redrive")
    def redrive_message(request: Request, tenant: str, message_id: str, csrf: str = Form(""),
                        resend: str = Form("")) -> Response:
        scope = _posted(request, tenant, csrf)
        if isinstance(scope, Response):
            return scope
        c, admin, _cfg = scope
        record = _message_of(c, tenant, message_id)
        if record is None:
            return not_found(request)
        if record.state not in REDRIVABLE_STATES:
            return _redirect(request, f"/admin/t/{tenant}/messages/{record.id}")
        c.record(request, admin, tenant, "message.redrive", record.id,
                 f"from {record.state}{', resend' if resend == '1' else ''}")
        outcome = redrive(c.runtime, record.id, resend=resend == "1")
        log.info("admin redrive", extra={"message_id": record.id, "tenant": tenant,
                                         "action": outcome.state if outcome else "missing"})
        return _redirect(request, f"/admin/t/{tenant}/messages/{record.id}?done=redrive")

    @router.get("/t/{tenant}/held", response_class=HTMLResponse)
    def held(request: Request, tenant: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        log_ = c.runtime.services.log
        rows = [_row(r) for state in ("held", "failed")
                for r in log_.search(TraceQuery(tenant=tenant, state=state, limit=200))]
        rows.sort(key=lambda r: r["received_at"], reverse=True)
        return _render(request, admin, cfg, "admin/held.html", {"rows": rows})

    # --- isolated files -----------------------------------------------------------------------
    @router.get("/t/{tenant}/isolated", response_class=HTMLResponse)
    def isolated(request: Request, tenant: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        page_no = _int(request.query_params.get("page"), 1, 1, 10_000)
        found = c.isolation.tenant_messages(tenant, limit=PAGE_SIZE + 1, offset=(page_no - 1) * PAGE_SIZE)
        items = [{"m": m, "files": c.isolation.files(m.id), "links": c.isolation.links(m.id)}
                 for m in found[:PAGE_SIZE]]
        return _render(request, admin, cfg, "admin/isolated.html", {
            "items": items, "page_no": page_no, "revoked": request.query_params.get("done") == "revoke",
            "prev_url": f"/admin/t/{tenant}/isolated?page={page_no - 1}" if page_no > 1 else "",
            "next_url": f"/admin/t/{tenant}/isolated?page={page_no + 1}" if len(found) > PAGE_SIZE
            else ""})

    @router.post("/t/{tenant}/isolated/{message_id}/revoke")
    def revoke(request: Request, tenant: str, message_id: str, csrf: str = Form(""),
               recipient: str = Form("")) -> Response:
        scope = _posted(request, tenant, csrf)
        if isinstance(scope, Response):
            return scope
        c, admin, _cfg = scope
        portal_message = _isolated_of(c, tenant, message_id)
        if portal_message is None:
            return not_found(request)
        if not c.isolation.revoke(portal_message.id, recipient[:320]):
            return not_found(request)
        c.record(request, admin, tenant, "isolation.revoke", portal_message.id, recipient[:320])
        return _redirect(request, f"/admin/t/{tenant}/isolated?done=revoke")

    # --- recipients ---------------------------------------------------------------------------
    @router.get("/t/{tenant}/recipients", response_class=HTMLResponse)
    def recipients(request: Request, tenant: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        q = request.query_params.get("q", "")[:200]
        everyone = c.runtime.services.directory.recipients(tenant)
        found = [r for r in everyone if _recipient_matches(r, q)]
        return _render(request, admin, cfg, "admin/recipients.html", {
            "q": q, "rows": found[:500], "total": len(found), "truncated": len(found) > 500})

    @router.get("/t/{tenant}/recipients/{address}", response_class=HTMLResponse)
    def recipient_form(request: Request, tenant: str, address: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        found = _recipient_of(c, tenant, address)
        if found is None:
            return not_found(request)
        return _render(request, admin, cfg, "admin/recipient.html", {"r": found, "saved": False})

    @router.post("/t/{tenant}/recipients/{address}")
    def recipient_save(request: Request, tenant: str, address: str, csrf: str = Form(""),
                       name: str = Form(""), organisation: str = Form(""), department: str = Form(""),
                       title: str = Form(""), memo: str = Form(""), spam_filter: str = Form("")
                       ) -> Response:
        scope = _posted(request, tenant, csrf)
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        found = _recipient_of(c, tenant, address)
        if found is None:
            return not_found(request)
        updated = dataclasses.replace(
            found, name=_clean(name), organisation=_clean(organisation), department=_clean(department),
            title=_clean(title), memo=_clean(memo, 2000), spam_filter=spam_filter == "1")
        changed = [f for f in ("name", "organisation", "department", "title", "memo", "spam_filter")
                   if getattr(found, f) != getattr(updated, f)]
        if changed:
            c.runtime.services.directory.upsert_recipients([updated])
            c.record(request, admin, tenant, "recipient.edit", found.address, ", ".join(changed))
        return _render(request, admin, cfg, "admin/recipient.html", {"r": updated, "saved": True})

    @router.post("/t/{tenant}/recipients/{address}/spam")
    def recipient_spam(request: Request, tenant: str, address: str, csrf: str = Form(""),
                       spam_filter: str = Form("")) -> Response:
        scope = _posted(request, tenant, csrf)
        if isinstance(scope, Response):
            return scope
        c, admin, _cfg = scope
        found = _recipient_of(c, tenant, address)
        if found is None:
            return not_found(request)
        wanted = spam_filter == "1"
        if found.spam_filter != wanted:
            c.runtime.services.directory.upsert_recipients([dataclasses.replace(found, spam_filter=wanted)])
            c.record(request, admin, tenant, "recipient.spam", found.address, "on" if wanted else "off")
        return _redirect(request, f"/admin/t/{tenant}/recipients")

    @router.get("/t/{tenant}/import", response_class=HTMLResponse)
    def import_form(request: Request, tenant: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        _c, admin, cfg = scope
        return _render(request, admin, cfg, "admin/import.html", {"result": None, "csv_text": "",
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
        scope = _posted(request, tenant, fields.get("csrf", ""))
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        from mailmoat.local.users import import_csv

        uploaded = data is not None
        if data is None:
            data = fields.get("csv_text", "").encode("utf-8")  # the dry run's text, sent back
        replace = fields.get("replace") == "1"
        lang = language(request, cfg.language)
        # The text may be longer than the upload it came from (CP932 → UTF-8), never twice as long.
        if len(data) > MAX_CSV_BYTES * (1 if uploaded else 2):
            return _render(request, admin, cfg, "admin/import.html", {
                "result": None, "csv_text": "", "replace": False,
                "too_big": translator(lang)("admin.import.too_big", mb=MAX_CSV_BYTES // 1_000_000)}, 413)
        apply = fields.get("step") == "apply"
        result = import_csv(c.runtime.services.directory, data, tenant=tenant, replace=replace,
                            dry_run=not apply)
        if result.applied:
            c.record(request, admin, tenant, "recipients.import", "",
                     f"{len(result.added)} added, {len(result.changed)} changed, "
                     f"{len(result.removed)} removed")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("cp932", "replace")  # shown back and re-posted as UTF-8
        return _render(request, admin, cfg, "admin/import.html", {
            "result": result, "csv_text": "" if result.applied else text, "replace": replace},
            422 if result.errors else 200)

    @router.post("/t/{tenant}/export")
    def export(request: Request, tenant: str, csrf: str = Form(""), encoding: str = Form("utf-8-sig")
               ) -> Response:
        scope = _posted(request, tenant, csrf)
        if isinstance(scope, Response):
            return scope
        c, admin, _cfg = scope
        from mailmoat.local.users import export_csv

        codec = encoding if encoding in ("utf-8", "utf-8-sig", "cp932") else "utf-8-sig"
        body = export_csv(c.runtime.services.directory, tenant=tenant).encode(codec, "replace")
        c.record(request, admin, tenant, "recipients.export", "", codec)
        response = Response(body, media_type="text/csv", headers={
            "Content-Disposition": filetools.content_disposition(f"recipients-{tenant}.csv")})
        return _refreshed(request, response)

    # --- tenant policy ------------------------------------------------------------------------
    @router.get("/t/{tenant}/policy", response_class=HTMLResponse)
    def policy(request: Request, tenant: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        _c, admin, cfg = scope
        return _render(request, admin, cfg, "admin/policy.html", _policy_view(policy_of(cfg)))

    @router.post("/t/{tenant}/policy")
    async def policy_save(request: Request, tenant: str) -> Response:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        scope = _posted(request, tenant, fields.get("csrf", ""))
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        wanted = _policy_from_form(fields)
        try:
            with c.policy_lock:
                current = c.runtime.services.config.tenant(tenant)
                updated = with_policy(current, wanted)
                c.policy.save(updated, admin.email)
                # Stages read services.config per message: the next one gets the new policy.
                c.runtime.services.config = replace_tenant(c.runtime.services.config, updated)
        except PolicyError as exc:
            view = _policy_view(wanted)
            view["problems"] = exc.problems
            return _render(request, admin, cfg, "admin/policy.html", view, 422)
        before, after = policy_of(cfg), policy_of(updated)
        changed = [k for k in POLICY_FIELDS if before.get(k) != after.get(k)]
        c.record(request, admin, tenant, "policy.update", "", ", ".join(changed) or "no change")
        view = _policy_view(after)
        view["saved"] = True
        return _render(request, admin, updated, "admin/policy.html", view)

    # --- audit ----------------------------------------------------------------------------------
    @router.get("/t/{tenant}/audit", response_class=HTMLResponse)
    def audit_trail(request: Request, tenant: str) -> Response:
        scope = _scope(request, tenant)
        if isinstance(scope, Response):
            return scope
        c, admin, cfg = scope
        page_no = _int(request.query_params.get("page"), 1, 1, 10_000)
        entries = c.audit_log.entries(tenant, limit=PAGE_SIZE + 1, offset=(page_no - 1) * PAGE_SIZE)
        return _render(request, admin, cfg, "admin/audit.html", {
            "entries": entries[:PAGE_SIZE], "page_no": page_no,
            "prev_url": f"/admin/t/{tenant}/audit?page={page_no - 1}" if page_no > 1 else "",
            "next_url": f"/admin/t/{tenant}/audit?page={page_no + 1}" if len(entries) > PAGE_SIZE
            else ""})

    return router


# --- access ---------------------------------------------------------------------------------------

def _console(request: Request) -> AdminConsole:
    c = console_for(request)
    assert c is not None  # current_admin() returned someone, so the console exists
    return c


def _scope(request: Request, tenant: str) -> Response | tuple[AdminConsole, Admin, TenantConfig]:
    """A GET's gate: signed in, else to the sign-in page; another tenant's, or no such tenant,
    is the same 404 as a wrong id."""
    admin = current_admin(request)
    if admin is None:
        return _to_login(request)
    c = _console(request)
    cfg = next((t for t in c.runtime.services.config.tenants if t.name == tenant), None)
    if cfg is None or not admin.may_manage(tenant):
        return not_found(request)
    return c, admin, cfg


def _posted(request: Request, tenant: str, csrf: str
            ) -> Response | tuple[AdminConsole, Admin, TenantConfig]:
    """Every POST: CSRF first, then the session (no redirect dance for a POST), then the tenant."""
    if not csrf_ok(request, csrf):
        return forbidden(request)
    if current_admin(request) is None:
        return forbidden(request)
    return _scope(request, tenant)


def _message_of(c: AdminConsole, tenant: str, message_id: str) -> MessageRecord | None:
    if len(message_id) > 200:
        return None
    record = c.runtime.services.log.get(message_id)
    return record if record is not None and record.tenant == tenant else None


def _isolated_of(c: AdminConsole, tenant: str, message_id: str) -> PortalMessage | None:
    if len(message_id) > 200:
        return None
    found = c.isolation.message(message_id)
    return found if found is not None and found.tenant == tenant else None


def _recipient_of(c: AdminConsole, tenant: str, address: str) -> Recipient | None:
    if len(address) > 320:
        return None
    found = c.runtime.services.directory.recipient(address.lower())
    # The directory may answer for an alias; the console edits the primary row only.
    if found is None or found.tenant != tenant or found.address != address.lower():
        return None
    return found


# --- responses ------------------------------------------------------------------------------------

def _render(request: Request, admin: Admin, tenant: TenantConfig | None, template: str,
            values: dict[str, Any], status: int = 200) -> Response:
    lang = language(request, tenant.language if tenant else "ja")
    values = {"admin": admin, "tenant": tenant.name if tenant else "", "nav": _nav(tenant),
              "operator": admin.operator, "switch_url": request.url.path, **values}
    return _refreshed(request, page(request, template, lang, values, status))


def _nav(tenant: TenantConfig | None) -> list[tuple[str, str]]:
    if tenant is None:
        return []
    base = f"/admin/t/{tenant.name}"
    return [(f"{base}/trace", "admin.nav.trace"), (f"{base}/held", "admin.nav.held"),
            (f"{base}/isolated", "admin.nav.isolated"), (f"{base}/recipients", "admin.nav.recipients"),
            (f"{base}/policy", "admin.nav.policy"), (f"{base}/audit", "admin.nav.audit")]


def _set_session(request: Request, response: Response, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=IDLE_SECONDS, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=secure(request))


def _refreshed(request: Request, response: Response) -> Response:
    """Sign the session again, so the idle expiry counts from this request."""
    session = getattr(request.state, "admin_session", None)
    c = console_for(request)
    if session is not None and c is not None:
        _set_session(request, response, c.sessions.dump(session))
    return response


def _redirect(request: Request, url: str) -> Response:
    return _refreshed(request, RedirectResponse(url, status_code=303))


def _to_login(request: Request) -> Response:
    c = console_for(request)
    if c is None:
        return not_found(request)
    return RedirectResponse("/admin/login", status_code=303)


def _callback_url(c: AdminConsole) -> str:
    # From the configured base URL, never the Host header: it must equal a CallbackURL of the
    # app client exactly, and Cognito compares it again at the token endpoint.
    return c.runtime.services.settings.portal_url.rstrip("/") + oidc.CALLBACK_PATH


def _cognito_redirect(request: Request, c: AdminConsole) -> Response:
    """To the managed login, with this sign-in's state, nonce and PKCE verifier in a signed
    cookie. SameSite=Lax: it must come back on Cognito's top-level redirect to the callback."""
    if c.cognito is None:
        return _handoff(request, language(request, "ja"), "admin.sso.unavailable", "", "", status=503)
    url, pending = oidc.begin(c.cognito, _callback_url(c))
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(oidc.FLOW_COOKIE, c.sign_in_flow.dump(pending), max_age=oidc.FLOW_SECONDS,
                        path=oidc.FLOW_COOKIE_PATH, httponly=True, samesite="lax", secure=secure(request))
    return response


def _drop_flow_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(oidc.FLOW_COOKIE, path=oidc.FLOW_COOKIE_PATH, secure=secure(request),
                           httponly=True, samesite="lax")


def _handoff(request: Request, lang: str, message_key: str, next_url: str, link_key: str, *,
             status: int = 200, refresh: bool = True) -> Response:
    return page(request, "admin/handoff.html", lang, {
        "message_key": message_key, "next_url": next_url, "link_key": link_key,
        # The language switch goes to the console, never back to a one-time callback URL.
        "refresh": refresh and bool(next_url), "failed": status >= 400, "switch_url": "/admin/"},
        status)


# --- views and forms ------------------------------------------------------------------------------

def _url(path: str, params: dict[str, Any]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(value or default)))
    except ValueError:
        return default


def _clean(value: str, limit: int = MAX_FIELD) -> str:
    """One line (memo: several), no control characters, bounded."""
    kept = "".join(ch for ch in value if ch.isprintable() or (limit > MAX_FIELD and ch == "\n"))
    return kept.strip()[:limit]


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _trace_query(tenant: str, form: dict[str, str], page_no: int) -> tuple[TraceQuery, list[str]]:
    problems: list[str] = []
    since, until = _day(form["since"]), _day(form["until"])
    if form["since"] and since is None:
        problems.append("since")
    if form["until"] and until is None:
        problems.append("until")
    for name, allowed in (("state", STATES), ("disposition", DISPOSITIONS), ("verdict", VERDICTS)):
        if form[name] and form[name] not in allowed:
            problems.append(name)
    query = TraceQuery(
        tenant=tenant, sender=form["sender"] or None, recipient=form["recipient"] or None,
        subject=form["subject"] or None,
        since=datetime.combine(since, time(), UTC) if since else None,
        # "until" is a day shown inclusive: everything before the next midnight (UTC).
        until=datetime.combine(until, time(), UTC) + timedelta(days=1) if until else None,
        state=form["state"] or None, disposition=form["disposition"] or None,
        verdict=form["verdict"] or None, symbol=form["symbol"].strip().upper() or None,
        limit=PAGE_SIZE + 1, offset=(page_no - 1) * PAGE_SIZE)
    return query, problems


def _row(record: MessageRecord) -> dict[str, Any]:
    report = record.report or {}
    verdicts = [a.get("verdict") for a in report.get("attachments", []) if isinstance(a, dict)]
    worst = next((v for v in reversed(VERDICTS) if v in verdicts), "")
    return {"id": record.id, "received_at": f"{record.received_at:%Y-%m-%d %H:%M:%S}",
            "mail_from": record.mail_from or "<>", "rcpt_to": ", ".join(record.rcpt_to[:5])
            + (" …" if len(record.rcpt_to) > 5 else ""), "subject": record.subject or "",
            "state": record.state, "disposition": record.disposition or "", "worst": worst,
            "attachments": len(verdicts), "error": record.error or ""}


def _detail(c: AdminConsole, record: MessageRecord) -> dict[str, Any]:
    report = record.report or {}
    logbook = c.runtime.services.log
    recorded = report.get("deliveries") or {}
    deliveries = [{"rcpt": r, "outcome": logbook.delivery_outcome(record.id, r) or recorded.get(r) or ""}
                  for r in record.rcpt_to]
    hops = [{"flag": flag(h.get("country")), "country": h.get("country") or "", "ip": h.get("ip") or "",
             "name": h.get("from") or "", "by": h.get("by") or ""}
            for h in report.get("route", []) if isinstance(h, dict)]
    stages = report.get("trace") or [{"stage": k, "duration_ms": v, "outcome": "ok", "detail": ""}
                                     for k, v in record.timings.items()]
    return {"r": record, "report": report, "auth": report.get("auth") or {}, "hops": hops,
            "countries": sorted({h["country"] for h in hops if h["country"]}),
            "findings": report.get("findings", []), "attachments": report.get("attachments", []),
            "stages": stages, "actions": report.get("actions", []), "deliveries": deliveries,
            "spam": report.get("spam") or {}, "from_header": report.get("from") or "",
            "has_raw": c.runtime.services.blobs.exists(raw_key(record.id)),
            "redrivable": record.state in REDRIVABLE_STATES}


def _recipient_matches(r: Recipient, q: str) -> bool:
    if not q:
        return True
    needle = q.casefold()
    return any(needle in str(v).casefold() for v in (r.address, r.name, r.organisation, r.department,
                                                      r.title, r.memo))


def _lines(text: str) -> list[str]:
    """A textarea or list → entries: one per line, or separated by commas, semicolons or spaces
    (addresses, domains and country codes contain none of these)."""
    return text.replace(",", " ").replace(";", " ").split()[:2000]


def _policy_from_form(fields: dict[str, str]) -> dict[str, Any]:
    wanted: dict[str, Any] = {
        "isolation": fields.get("isolation", ""),
        "zip_is_archive_type": fields.get("zip_is_archive_type") == "1",
        "defang_all_links": fields.get("defang_all_links") == "1",
        "html_to_text": fields.get("html_to_text") == "1",
        "spam_action": fields.get("spam_action", ""),
        "retention_days": fields.get("retention_days", ""),
        "allowed_senders": _lines(fields.get("allowed_senders", "")),
        "blocked_senders": _lines(fields.get("blocked_senders", "")),
    }
    rules: list[tuple[float, int, dict[str, Any]]] = []
    for i in range(200):
        prefix = f"rule-{i}-"
        if f"{prefix}name" not in fields:
            break
        if fields.get(f"{prefix}remove") == "1":
            continue
        rule: dict[str, Any] = {
            "name": fields.get(f"{prefix}name", "").strip()[:200],
            "sender": _lines(fields.get(f"{prefix}sender", "")),
            "countries": [c.upper() for c in _lines(fields.get(f"{prefix}countries", ""))],
            "min_size": fields.get(f"{prefix}min_size", "").strip() or None,
            "max_size": fields.get(f"{prefix}max_size", "").strip() or None,
            "action": fields.get(f"{prefix}action", ""),
        }
        if not rule["name"] and not rule["sender"] and not rule["countries"] \
                and rule["min_size"] is None and rule["max_size"] is None:
            continue  # the empty row offered for a new rule
        try:
            order = float(fields.get(f"{prefix}order", "") or i + 1)
        except ValueError:
            order = float(i + 1)
        rules.append((order, i, rule))
    wanted["rules"] = [rule for _order, _i, rule in sorted(rules, key=lambda x: (x[0], x[1]))]
    return wanted


def _policy_view(policy: dict[str, Any]) -> dict[str, Any]:
    """Form values from a policy dict (also an invalid one, shown back with its problems)."""
    rules = [dict(r) for r in policy.get("rules", []) if isinstance(r, dict)]
    for rule in rules:
        rule["sender_text"] = "\n".join(str(s) for s in rule.get("sender", []))
        rule["countries_text"] = " ".join(str(s) for s in rule.get("countries", []))
    rules += [{"name": "", "sender_text": "", "countries_text": "", "min_size": None, "max_size": None,
               "action": "isolate"} for _ in range(RULE_ROWS_EXTRA)]
    return {"p": policy, "rules": rules, "rule_actions": RULE_ACTIONS, "problems": [], "saved": False,
            "allowed_text": "\n".join(str(s) for s in policy.get("allowed_senders", [])),
            "blocked_text": "\n".join(str(s) for s in policy.get("blocked_senders", [])),
            "all_tenants": ALL_TENANTS}
