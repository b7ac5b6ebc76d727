"""What every page of the web app shares: security headers, CSRF, language, rendering.

The recipient portal, the admin console, keep-mail and the spam-digest links all render
through `page()` and check POSTs with `csrf_ok()`, so the rules live in one place.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from mailmoat_web.i18n import LANG_COOKIE, negotiate, translator

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "mm_csrf"  # plain HTTP (make run on 127.0.0.1)
# Over HTTPS: the __Host- prefix makes the browser refuse the cookie unless it was set Secure,
# for this host, Path=/, without Domain, so a sibling subdomain cannot plant one.
CSRF_COOKIE_HTTPS = "__Host-mm_csrf"
# The sessions a token is bound to (admin console, keep-mail); the portal has none. The admin
# cookie is an itsdangerous value "payload.timestamp.signature" re-signed on every request:
# only its payload (the session's identity) is stable.
_SESSION_COOKIES = (("mm_admin", True), ("mm_keep", False))

# Strict by default: no inline script, no framing, no referrer leaking portal tokens.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@functools.cache
def _templates() -> Environment:
    # jinja2 loads with the first page rendered, not with the portal handler's import (issue 15)
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                       undefined=StrictUndefined, auto_reload=False)


class Answer(Exception):
    """Raised by a route's dependency (a gate) to answer with this page instead: a 404, a 403,
    the way to the sign-in page. create_app() registers `answer` as its handler."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def answer(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Answer)
    return exc.response


def language(request: Request, default: str) -> str:
    return negotiate(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                     request.headers.get("accept-language"), default)


def secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def _csrf_key(request: Request) -> bytes:
    """The tokens' HMAC key, derived from the deployment's link-signing secret (the same on
    every Lambda instance and every worker); a random one per app when it has no runtime."""
    key = getattr(request.app.state, "csrf_key", None)
    if key is None:
        base = _shared_secret(getattr(request.app.state, "runtime", None))
        key = hmac.new(base, b"mailmoat csrf v1", hashlib.sha256).digest()
        request.app.state.csrf_key = key
    return bytes(key)


def _shared_secret(runtime: Any) -> bytes:
    """The link-signing key; else the console's session key; else (no runtime, or neither
    configured) a random key of this process, with which tokens outlive no restart."""
    if runtime is not None:
        from mailmoat.spam.digest import link_secret

        try:
            return link_secret(runtime.settings)
        except RuntimeError:
            pass
        with contextlib.suppress(Exception):  # any failure here only narrows the token's reach
            return bytes(runtime.services.admin.session_secret())
    return secrets.token_bytes(32)


def csrf_cookie_name(request: Request) -> str:
    return CSRF_COOKIE_HTTPS if secure(request) else CSRF_COOKIE


def _session_binding(request: Request) -> str:
    parts = []
    for name, signed in _SESSION_COOKIES:
        value = request.cookies.get(name, "")[:4096]
        parts.append(value.rsplit(".", 2)[0] if signed else value)
    return "|".join(parts)


def csrf_token(request: Request, nonce: str) -> str:
    """The form's token: an HMAC of the browser's CSRF cookie and its session. A cookie an
    attacker sets (and a token minted for another session) does not match: the double-submit
    pair can no longer be chosen freely."""
    message = f"{nonce}|{_session_binding(request)}".encode()
    return hmac.new(_csrf_key(request), message, hashlib.sha256).hexdigest()


def csrf_ok(request: Request, submitted: str) -> bool:
    nonce = request.cookies.get(csrf_cookie_name(request), "")
    if not nonce or not submitted or len(nonce) > 128:
        return False
    return hmac.compare_digest(csrf_token(request, nonce).encode(), submitted.encode())


def page(request: Request, template: str, lang: str, values: dict[str, Any],
          status: int = 200) -> Response:
    cookie_name = csrf_cookie_name(request)
    nonce = request.cookies.get(cookie_name, "")
    if not nonce or len(nonce) > 128:
        nonce = secrets.token_urlsafe(32)
    csrf = csrf_token(request, nonce)
    other = "en" if lang == "ja" else "ja"
    switch_url = values.pop("switch_url", "/")
    body = _templates().get_template(template).render(
        lang=lang, _=translator(lang), csrf=csrf, other_lang=other,
        switch_url=f"{switch_url}?lang={other}", **values)
    response = HTMLResponse(body, status_code=status)
    if request.cookies.get(cookie_name) != nonce:
        # Signed double-submit: the form carries HMAC(cookie, session); a cross-site page can
        # read neither, and a planted cookie has no matching token.
        response.set_cookie(cookie_name, nonce, httponly=True, samesite="strict",
                            secure=secure(request), path="/")
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True,
                            samesite="lax", secure=secure(request), path="/")
    return response


def not_found(request: Request) -> Response:
    lang = language(request, "ja")
    return page(request, "error.html", lang, {"title_key": "notfound.title",
                                                "body_key": "notfound.body"}, 404)


def forbidden(request: Request) -> Response:
    lang = language(request, "ja")
    return page(request, "error.html", lang, {"title_key": "forbidden.title",
                                                "body_key": "forbidden.body"}, 403)


