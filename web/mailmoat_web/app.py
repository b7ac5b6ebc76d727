"""The recipient portal (FastAPI): served by uvicorn locally and by Mangum on AWS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from mailmoat.isolation import sweep
from mailmoat_web.keepmail import router as keepmail_router
from mailmoat_web.pages import HERE, SECURITY_HEADERS, Answer, answer, language, page
from mailmoat_web.pages import not_found as not_found_page
from mailmoat_web.portal import Portal
from mailmoat_web.portal import router as portal_router
from mailmoat_web.portal_files import router as portal_files_router
from mailmoat_web.spam import router as spam_router

if TYPE_CHECKING:
    from mailmoat.runtime import Runtime
    from mailmoat.services.rescan import AntivirusLater

log = logging.getLogger("mailmoat.portal")

SWEEP_EVERY_SECONDS = 24 * 3600.0


def create_app(runtime: Runtime | None = None, *, sweep_every: float | None = SWEEP_EVERY_SECONDS,
               later: AntivirusLater | None = None) -> FastAPI:
    """The portal app. With a runtime and `sweep_every`, expired isolated files are swept when
    the server starts and then periodically (local `mailmoat serve`; AWS uses lifecycle + TTL).
    `later`: an antivirus elsewhere for what a password opens, when the runtime has none (AWS)."""
    app = FastAPI(title="mailmoat portal", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=_sweeping(sweep_every))
    app.state.runtime = runtime
    app.state.portal = Portal(runtime.services, later) if runtime is not None else None
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.middleware("http")(_security_headers)
    app.add_api_route("/", _home, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    # Feature routers, one line each: the portal (/m), keep-mail (/k), spam digest links (/s),
    # the tenant admin console (/admin).
    app.include_router(portal_router)  # /m/{token}: the message page and previews
    app.include_router(portal_files_router)  # /m/{token}/f/{path}: download, unlock, member
    app.include_router(keepmail_router)  # /k: keep-mail (continuity view)
    app.include_router(spam_router)  # /s: spam digest links (release, allow sender)
    # /admin: the tenant admin console, loaded by the first request under /admin (a recipient's
    # link never needs its routes, and they are half of what the portal imports).
    app.middleware("http")(_admin_console_on_first_use(app))
    app.add_exception_handler(Answer, answer)  # a gate's 403/404/sign-in redirect
    app.add_exception_handler(404, _not_found)
    return app


def _sweeping(every: float | None) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        p = app.state.portal
        if isinstance(p, Portal) and every:
            task = asyncio.create_task(_sweep_forever(p, every))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()

    return lifespan


async def _sweep_forever(p: Portal, every: float) -> None:
    while True:
        try:
            await asyncio.to_thread(sweep, p.store, p.services.blobs, p.now())
        except Exception:  # a failed sweep is retried next time; it must not stop the portal
            log.exception("isolation sweep failed")
        await asyncio.sleep(every)


def _admin_console_on_first_use(app: FastAPI) -> Callable[
        [Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    included = False

    async def include(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        nonlocal included
        if not included and request.url.path.startswith("/admin"):
            # Before routing: the router reads its routes per request. One event loop, so the
            # check and the include happen together.
            from mailmoat_web.admin import admin_console_router

            app.include_router(admin_console_router())
            included = True
        return await call_next(request)

    return include


async def _security_headers(request: Request,
                            call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _home(request: Request) -> Response:
    lang = language(request, "ja")
    return page(request, "home.html", lang, {"switch_url": "/"})


async def _healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return not_found_page(request)
