"""What every page of the web app shares: security headers, CSRF, language, rendering.

The recipient portal, the admin console, keep-mail and the spam-digest links all render
through `page()` and check POSTs with `csrf_ok()`, so the rules live in one place.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from mailmoat_web.i18n import LANG_COOKIE, negotiate, translator

HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "mm_csrf"

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

_ENV = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
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


def csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and bool(submitted) and hmac.compare_digest(cookie.encode(), submitted.encode())


def page(request: Request, template: str, lang: str, values: dict[str, Any],
          status: int = 200) -> Response:
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    other = "en" if lang == "ja" else "ja"
    switch_url = values.pop("switch_url", "/")
    body = _ENV.get_template(template).render(
        lang=lang, _=translator(lang), csrf=csrf, other_lang=other,
        switch_url=f"{switch_url}?lang={other}", **values)
    response = HTMLResponse(body, status_code=status)
    if request.cookies.get(CSRF_COOKIE) != csrf:
        # Double-submit: the form carries the same value; a cross-site page can read neither.
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict",
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


