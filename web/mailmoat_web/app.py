"""The recipient portal (FastAPI): served by uvicorn locally and by Mangum on AWS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

if TYPE_CHECKING:
    from mailmoat.runtime import Runtime

# Strict by default: no inline script, no framing, no referrer leaking portal tokens.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_NOT_FOUND = """<!doctype html><html lang="ja"><meta charset="utf-8"><title>mailmoat</title>
<h1>見つかりません / Not found</h1>
<p>このリンクは無効か、有効期限が切れています。<br>This link is invalid or has expired.</p></html>"""

_HOME = """<!doctype html><html lang="ja"><meta charset="utf-8"><title>mailmoat</title>
<h1>mailmoat</h1>
<p>隔離された添付ファイルは、通知メールのリンクから確認できます。<br>
Isolated attachments are reached through the link in the notice you received.</p></html>"""


def create_app(runtime: Runtime | None = None) -> FastAPI:
    app = FastAPI(title="mailmoat portal", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime

    @app.middleware("http")
    async def security_headers(request: Request,
                               call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def home() -> str:
        return _HOME

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/m/{token}", response_class=HTMLResponse)
    async def message_page(token: str) -> HTMLResponse:
        # Unknown and expired tokens look the same (no oracle for guessing).
        return HTMLResponse(_NOT_FOUND, status_code=404)

    return app
