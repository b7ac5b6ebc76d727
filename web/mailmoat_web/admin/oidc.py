"""Admin sign-in on AWS: OAuth 2.0 authorization code + PKCE against the Cognito managed login.

`/admin/login` sends the browser to `https://<domain>/oauth2/authorize` with a fresh `state`,
`nonce` and PKCE challenge; the three secrets wait in a short-lived signed cookie. The callback
checks `state`, exchanges the code at `/oauth2/token` (with the PKCE verifier), then verifies
the ID token: RS256 under a key of the pool's JWKS (google-auth does the signature and the
`iat`/`exp`/`aud` checks), `iss`, `token_use == "id"` and the `nonce`. What comes out is the
claims; console.admin_from_claims turns them into an Admin and the console keeps its own
session, as after a local sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

if TYPE_CHECKING:  # the HTTP and JWT libraries load on the first sign-in, not at cold start
    import requests

FLOW_COOKIE = "mm_admin_oidc"
FLOW_COOKIE_PATH = "/admin/oauth2"
FLOW_SECONDS = 600  # from the redirect to Cognito until the callback, sign-in and MFA included
CALLBACK_PATH = "/admin/oauth2/callback"
LEEWAY_SECONDS = 60  # clock skew between Cognito and Lambda
HTTP_TIMEOUT = (3.05, 10.0)
JWKS_MIN_REFRESH_SECONDS = 300  # an unknown kid refetches the JWKS, at most this often
MAX_TOKEN_CHARS = 16_384
_SALT = "mailmoat.admin.oidc"


class SignInFailed(Exception):
    """The callback did not prove a sign-in. The message is for the log (never a token)."""


@dataclass(frozen=True, slots=True)
class CognitoLogin:
    """One user pool's managed login, as the stack's environment names it."""

    user_pool_id: str  # "<region>_<id>"
    client_id: str
    domain: str  # "<prefix>.auth.<region>.amazoncognito.com" or a custom domain

    @classmethod
    def from_settings(cls, settings: object) -> CognitoLogin | None:
        pool = str(getattr(settings, "cognito_user_pool_id", "") or "")
        client = str(getattr(settings, "cognito_client_id", "") or "")
        domain = str(getattr(settings, "cognito_domain", "") or "").removeprefix("https://").rstrip("/")
        if not (pool and client and domain) or "_" not in pool:
            return None
        return cls(pool, client, domain)

    @property
    def region(self) -> str:
        return self.user_pool_id.partition("_")[0]

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    def endpoint(self, path: str) -> str:
        return f"https://{self.domain}{path}"


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    state: str
    nonce: str
    verifier: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def code_challenge(verifier: str) -> str:
    """RFC 7636 S256."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class FlowCookie:
    """The pending sign-in's secrets, signed (itsdangerous) and valid for FLOW_SECONDS."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT,
                                                  signer_kwargs={"digest_method": hashlib.sha256})

    def dump(self, pending: PendingSignIn) -> str:
        return str(self._serializer.dumps({"s": pending.state, "n": pending.nonce, "v": pending.verifier}))

    def load(self, value: str | None) -> PendingSignIn | None:
        if not value or len(value) > 2048:
            return None
        try:
            data: Any = self._serializer.loads(value, max_age=FLOW_SECONDS)
        except (SignatureExpired, BadSignature):
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data.get(k)
                                                 for k in ("s", "n", "v")):
            return None
        return PendingSignIn(data["s"], data["n"], data["v"])


def begin(login: CognitoLogin, redirect_uri: str) -> tuple[str, PendingSignIn]:
    """The authorize URL to send the browser to, and what the callback must find again."""
    pending = PendingSignIn(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64))
    query = urlencode({
        "response_type": "code", "client_id": login.client_id, "redirect_uri": redirect_uri,
        "scope": "openid email", "state": pending.state, "nonce": pending.nonce,
        "code_challenge": code_challenge(pending.verifier), "code_challenge_method": "S256"})
    return f"{login.endpoint('/oauth2/authorize')}?{query}", pending


def logout_url(login: CognitoLogin, return_to: str) -> str:
    """Cognito's /logout ends its own session too, then sends the browser to `return_to`
    (one of the app client's LogoutURLs)."""
    return f"{login.endpoint('/logout')}?{urlencode({'client_id': login.client_id, 'logout_uri': return_to})}"


class JwksCache:
    """The pool's signing keys as PEM by kid, fetched on first use and again (rate-limited)
    when a token names a kid not seen yet (Cognito rotates keys)."""

    def __init__(self, session: requests.Session | None = None) -> None:
        self._session = session
        self._keys: dict[str, dict[str, str]] = {}
        self._fetched: dict[str, float] = {}
        self._lock = threading.Lock()

    def keys(self, url: str, kid: str) -> dict[str, str]:
        with self._lock:
            known = self._keys.get(url)
            stale = time.monotonic() - self._fetched.get(url, -1e9) > JWKS_MIN_REFRESH_SECONDS
            if known is None or (kid not in known and stale):
                self._keys[url] = known = self._fetch(url)
                self._fetched[url] = time.monotonic()
            return known

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _fetch(self, url: str) -> dict[str, str]:
        import requests

        try:
            response = self.session.get(url, timeout=HTTP_TIMEOUT)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise SignInFailed(f"JWKS unavailable: {type(exc).__name__}") from None
        found: dict[str, str] = {}
        for key in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(key, dict) or key.get("kty") != "RSA" or key.get("use", "sig") != "sig":
                continue
            try:
                found[str(key["kid"])] = _rsa_pem(str(key["n"]), str(key["e"]))
            except (KeyError, ValueError):
                continue
        return found


def _rsa_pem(n: str, e: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    def number(value: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")

    public_key = RSAPublicNumbers(number(e), number(n)).public_key()
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


_JWKS = JwksCache()


def exchange_code(login: CognitoLogin, code: str, redirect_uri: str, verifier: str,
                  session: requests.Session | None = None) -> str:
    """The ID token for an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5)."""
    import requests

    if not code or len(code) > 1024:
        raise SignInFailed("no usable authorization code")
    try:
        response = (session or requests).post(
            login.endpoint("/oauth2/token"), timeout=HTTP_TIMEOUT,
            data={"grant_type": "authorization_code", "client_id": login.client_id, "code": code,
                  "redirect_uri": redirect_uri, "code_verifier": verifier},
            headers={"Content-Type": "application/x-www-form-urlencoded"})
    except requests.RequestException as exc:
        raise SignInFailed(f"token endpoint unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise SignInFailed(f"token endpoint answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise SignInFailed("token endpoint answer is not JSON") from None
    token = body.get("id_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise SignInFailed("token endpoint answer has no ID token")
    return token


def verify_id_token(login: CognitoLogin, token: str, nonce: str, jwks: JwksCache | None = None
                    ) -> Mapping[str, Any]:
    """The claims of a valid ID token of this pool and client, issued for this sign-in."""
    from google.auth import exceptions as google_exceptions
    from google.auth import jwt as google_jwt

    try:
        header = google_jwt.decode_header(token)  # type: ignore[no-untyped-call]
    except (google_exceptions.GoogleAuthError, ValueError) as exc:
        raise SignInFailed(f"not a JWT: {type(exc).__name__}") from None
    kid = header.get("kid") if isinstance(header, dict) else None
    if header.get("alg") != "RS256" or not isinstance(kid, str) or not kid:
        raise SignInFailed("ID token is not RS256 with a key id")
    keys = (jwks or _JWKS).keys(login.jwks_url, kid)
    if kid not in keys:
        raise SignInFailed("ID token signed by a key the pool does not publish")
    try:
        claims = google_jwt.decode(  # type: ignore[no-untyped-call]
            token, certs={kid: keys[kid]}, audience=login.client_id,
            clock_skew_in_seconds=LEEWAY_SECONDS)
    except (google_exceptions.GoogleAuthError, ValueError) as exc:
        raise SignInFailed(f"ID token rejected: {str(exc)[:120]}") from None
    if not isinstance(claims, Mapping):
        raise SignInFailed("ID token payload is not an object")
    if claims.get("iss") != login.issuer:
        raise SignInFailed("ID token from another issuer")
    if claims.get("token_use") != "id":
        raise SignInFailed("not an ID token")
    claimed_nonce = claims.get("nonce")
    if not isinstance(claimed_nonce, str) or not hmac.compare_digest(claimed_nonce, nonce):
        raise SignInFailed("ID token for another sign-in (nonce)")
    return claims


def complete(login: CognitoLogin, pending: PendingSignIn | None, state: str, code: str,
             redirect_uri: str, *, jwks: JwksCache | None = None,
             session: requests.Session | None = None) -> Mapping[str, Any]:
    """The callback: state first (before any request leaves), then code → token → claims."""
    if pending is None:
        raise SignInFailed("no pending sign-in (cookie missing, forged or older than 10 minutes)")
    if not state or not hmac.compare_digest(state.encode("utf-8"), pending.state.encode("utf-8")):
        raise SignInFailed("state does not match the pending sign-in")
    token = exchange_code(login, code, redirect_uri, pending.verifier, session)
    return verify_id_token(login, token, pending.nonce, jwks)
