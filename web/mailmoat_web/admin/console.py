"""What the console needs per process (stores, sign-in, session codec) and who is asking.

`current_admin(request)` is the one place an identity comes from: the console's signed
session cookie, issued locally after a password sign-in of a console account, on AWS after the
Cognito managed login's ID token was verified (admin/oidc.py, docs/admin.md).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Request

from mailmoat.admin.accounts import ALL_TENANTS, Authenticator
from mailmoat.admin.audit import AuditEntry, audit
from mailmoat.ports import AccountStore, AuditLog, IsolationStore, PolicyStore
from mailmoat_web.admin.oidc import CognitoLogin, FlowCookie
from mailmoat_web.admin.session import FEDERATED_TAG, SESSION_COOKIE, SessionCodec, password_tag

if TYPE_CHECKING:
    from mailmoat.runtime import Runtime

COGNITO_TENANT_CLAIM = "custom:tenant"
COGNITO_OPERATOR_GROUP = "mailmoat-operators"


@dataclass(frozen=True, slots=True)
class Admin:
    """The signed-in admin: one tenant, or every tenant for an operator."""

    email: str
    tenant: str
    source: Literal["local", "cognito"] = "local"

    @property
    def operator(self) -> bool:
        return self.tenant == ALL_TENANTS

    def may_manage(self, tenant: str) -> bool:
        return self.operator or self.tenant == tenant


class AdminConsole:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        services = runtime.services
        stores = services.admin  # built by the composition root (mailmoat.bootstrap)
        if services.isolation is None:
            raise RuntimeError("the console needs the isolated-file store")
        self.isolation: IsolationStore = services.isolation
        self.accounts: AccountStore | None = stores.accounts
        self.audit_log: AuditLog = stores.audit
        self.policy: PolicyStore = stores.policy
        self.federated_sessions: Any = stores.federated_sessions  # AWS: sign-out of Cognito admins
        self.authenticator = Authenticator(self.accounts, services.attempts, services.clock.now) \
            if self.accounts is not None else None
        secret = stores.session_secret()
        self.sessions = SessionCodec(secret, time.time)
        self.uses_cognito = stores.federated
        self.cognito = CognitoLogin.from_settings(services.settings) if self.uses_cognito else None
        self.sign_in_flow = FlowCookie(secret + b"/oidc", time.time)
        # Saves of the tenant policy replace services.config as a whole; one at a time.
        self.policy_lock = threading.Lock()

    def record(self, request: Request, admin: Admin | str, tenant: str, action: str,
               target: str = "", detail: str = "") -> None:
        email = admin.email if isinstance(admin, Admin) else admin
        audit(self.audit_log, AuditEntry(at=self.runtime.services.clock.now(), admin=email,
                                         tenant=tenant, action=action, target=target,
                                         client_ip=client_ip(request), detail=detail))


_CONSOLE_LOCK = threading.Lock()


def console_for(request: Request) -> AdminConsole | None:
    """The app's console, built on first use from the runtime the app was created with."""
    state = request.app.state
    built = getattr(state, "admin_console", None)
    if isinstance(built, AdminConsole):
        return built
    runtime = getattr(state, "runtime", None)
    if runtime is None:
        return None
    with _CONSOLE_LOCK:
        built = getattr(state, "admin_console", None)
        if not isinstance(built, AdminConsole):
            built = AdminConsole(runtime)
            state.admin_console = built
    return built


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def current_admin(request: Request) -> Admin | None:
    """Who is asking, or None. The only function the routes ask about identity."""
    console = console_for(request)
    if console is None:
        return None
    session = console.sessions.load(request.cookies.get(SESSION_COOKIE))
    if console.uses_cognito:
        if session is None or session.password_tag != FEDERATED_TAG or not session.tenant:
            return None
        revoked = console.federated_sessions
        if revoked is not None and session.issued_at <= revoked.sessions_after(session.email):
            return None  # signed out since: a kept copy of the cookie is void too
        request.state.admin_session = session
        return Admin(session.email, session.tenant, "cognito")
    if session is None or console.accounts is None:
        return None
    account = console.accounts.account(session.email)
    if account is None or account.disabled or password_tag(account.password_hash) != session.password_tag \
            or session.issued_at <= account.sessions_after_ms:
        return None
    request.state.admin_session = session  # the routes sign it again (idle expiry slides)
    return Admin(account.email, account.tenant)


def admin_from_claims(claims: Any) -> Admin | None:
    """Verified Cognito ID-token claims → Admin: `email`, `custom:tenant`, and membership of
    the operators group (`cognito:groups`) for an all-tenants account."""
    if not isinstance(claims, dict):
        return None
    email = claims.get("email")
    # ID tokens carry a JSON boolean; the string form is accepted for tokens that carry one.
    if not isinstance(email, str) or not email or claims.get("email_verified", True) in (False, "false"):
        return None
    groups = claims.get("cognito:groups") or []
    if not isinstance(groups, list):
        groups = []
    if COGNITO_OPERATOR_GROUP in groups:
        return Admin(email.lower(), ALL_TENANTS, "cognito")
    tenant = claims.get(COGNITO_TENANT_CLAIM)
    if not isinstance(tenant, str) or not tenant or tenant == ALL_TENANTS:
        return None
    return Admin(email.lower(), tenant, "cognito")
