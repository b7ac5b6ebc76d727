"""The recipient portal (FastAPI): served by uvicorn locally and by Mangum on AWS."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from mailmoat.isolation import sweep
from mailmoat_web.pages import HERE, SECURITY_HEADERS, Answer, answer, language, page
from mailmoat_web.pages import not_found as not_found_page
from mailmoat_web.portal import Portal
from mailmoat_web.portal import router as portal_router

if TYPE_CHECKING:
    from fastapi import APIRouter

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
    # Feature routers: the message page (/m/{token}, a recipient's link: the first page) at
    # once; the others (LAZY_ROUTERS) each loaded by the first request for its paths: the
    # first page needs none of them, and defining them is much of what the portal's import
    # costs (FastAPI analyses every endpoint's signature).
    app.include_router(portal_router)  # /m/{token}: the message page and previews
    app.middleware("http")(_routers_on_first_use(app, LAZY_ROUTERS))
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


def _portal_files_router() -> APIRouter:
    from mailmoat_web.portal_files import router  # /m/{token}/f/{path}/…: download, unlock …

    return router


def _keepmail_router() -> APIRouter:
    from mailmoat_web.keepmail import router  # /k: keep-mail (continuity view)

    return router


def _spam_router() -> APIRouter:
    from mailmoat_web.spam import router  # /s: spam digest links (release, allow sender)

    return router


def _admin_router() -> APIRouter:
    from mailmoat_web.admin import admin_console_router  # /admin: the tenant admin console

    return admin_console_router()


# The paths a router serves (matched at the start of the path) -> the router, imported and
# included by the first request for one of them.
LAZY_ROUTERS: dict[str, Callable[[], APIRouter]] = {
    r"/m/[^/]+/f/": _portal_files_router,  # the file actions (POST), after the message page
    r"/k(/|$)": _keepmail_router,  # /k: keep-mail (continuity view)
    r"/s(/|$)": _spam_router,  # /s: spam digest links (release, allow sender)
    r"/admin(/|$)": _admin_router,  # /admin: the tenant admin console
}


def _routers_on_first_use(app: FastAPI, routers: dict[str, Callable[[], APIRouter]]) -> Callable[
        [Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    pending = {re.compile(pattern): load for pattern, load in routers.items()}

    async def include(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        for pattern in [p for p in pending if p.match(path)]:
            # Before routing: the router reads its routes per request. One event loop, so the
            # check and the include happen together.
            app.include_router(pending[pattern]())
            del pending[pattern]  # only once it loaded: a failed import is tried again next time
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
