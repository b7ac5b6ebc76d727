"""The console's session cookie: signed with itsdangerous, idle and absolute expiry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

SESSION_COOKIE = "mm_admin"
COOKIE_PATH = "/admin"
IDLE_SECONDS = 30 * 60  # signed again on every request; unused this long, it is void
ABSOLUTE_SECONDS = 12 * 3600  # and never longer than this after signing in
_SALT = "mailmoat.admin.session"


@dataclass(frozen=True, slots=True)
class Session:
    email: str
    issued_at: int  # epoch milliseconds of the sign-in
    password_tag: str  # changes with the password hash: a new password ends old sessions
    # Set only for a Cognito sign-in (AWS): the tenant the ID token named, or "*" for an
    # operator. A local session's tenant comes from its account row instead.
    tenant: str | None = None


FEDERATED_TAG = "cognito"  # the password_tag of a Cognito session: there is no local password


def password_tag(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]


class SessionCodec:
    """Cookie value <-> Session. `clock` returns epoch seconds (tests move it)."""

    def __init__(self, secret: bytes, clock: Callable[[], float]) -> None:
        self.clock = clock

        class ClockSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT, signer=ClockSigner,
                                                  signer_kwargs={"digest_method": hashlib.sha256})

    def issue(self, email: str, password_hash: str) -> str:
        return self.dump(Session(email, int(self.clock() * 1000), password_tag(password_hash)))

    def issue_federated(self, email: str, tenant: str) -> str:
        return self.dump(Session(email, int(self.clock() * 1000), FEDERATED_TAG, tenant))

    def dump(self, session: Session) -> str:
        data: dict[str, Any] = {"e": session.email, "i": session.issued_at, "p": session.password_tag}
        if session.tenant is not None:
            data["t"] = session.tenant
        return str(self._serializer.dumps(data))

    def load(self, value: str | None) -> Session | None:
        """The session, or None when missing, forged, idle too long or too old."""
        if not value or len(value) > 4096:
            return None
        try:
            data: Any = self._serializer.loads(value, max_age=IDLE_SECONDS)
        except (SignatureExpired, BadSignature):
            return None
        if not isinstance(data, dict):
            return None
        email, issued, tag = data.get("e"), data.get("i"), data.get("p")
        if not isinstance(email, str) or not isinstance(issued, int) or not isinstance(tag, str):
            return None
        if not 0 <= self.clock() * 1000 - issued <= ABSOLUTE_SECONDS * 1000:
            return None
        tenant = data.get("t")
        if tenant is not None and not isinstance(tenant, str):
            return None
        return Session(email, issued, tag, tenant)
