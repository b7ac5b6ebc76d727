"""The portal's HTTP server for `mailmoat serve`: uvicorn (h11) with the limits it lacks.

An attack run held 2,000 portal connections open with partial headers for at least 120 s:
uvicorn starts its keep-alive timer only after a response, so a request that never finishes
its headers is never timed out, and `limit_concurrency` answers 503 to requests but counts no
half-open connection. Here each connection is held to:

- a header deadline from its first byte (or its previous response) to the end of the headers,
  and a body deadline from there to the end of the request — slow bytes do not extend either;
- at most `portal_max_connections_per_ip` connections per client address and
  `portal_max_connections` in all: beyond them a connection is closed at once;
- an idle keep-alive of `portal_keepalive_seconds`, and at most `portal_keepalive_requests`
  requests per connection;
- `portal_max_concurrency` as uvicorn's limit_concurrency: once that many connections are open
  (or requests in flight), a further request is answered 503 rather than queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mailmoat.settings import Settings

log = logging.getLogger("mailmoat.portal")


class PortalLimits:
    """The limits and the per-address connection counts one server's connections share (all
    on its event loop's thread, so a plain Counter is enough)."""

    def __init__(self, settings: Settings) -> None:
        self.header_timeout = settings.portal_header_timeout_seconds
        self.body_timeout = settings.portal_body_timeout_seconds
        self.keepalive_requests = settings.portal_keepalive_requests
        self.max_connections = settings.portal_max_connections
        self.max_per_ip = settings.portal_max_connections_per_ip
        self.open: Counter[str] = Counter()
        self.total = 0

    def take(self, ip: str) -> bool:
        if self.total >= self.max_connections or self.open[ip] >= self.max_per_ip:
            return False
        self.open[ip] += 1
        self.total += 1
        return True

    def give_back(self, ip: str) -> None:
        self.open[ip] -= 1
        self.total -= 1
        if self.open[ip] <= 0:
            del self.open[ip]


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines and connection caps (PortalLimits)."""

    limits: PortalLimits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self._slot: str | None = str(peer[0]) if isinstance(peer, tuple) else "?"
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: str = "headers"
        self._served = 0
        if not self.limits.take(self._slot):
            log.warning("portal connection refused: limit reached", extra={"action": "refused"})
            self._slot = None
            transport.abort()
            return
        super().connection_made(transport)
        self._arm("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._slot is None:  # refused in connection_made: nothing of uvicorn's to undo
            return
        self.limits.give_back(self._slot)
        self._slot = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        self._served += 1
        if self._served >= self.limits.keepalive_requests and not self.transport.is_closing():
            self._close("keep-alive request limit")
            return
        super().on_response_complete()
        self._follow()

    # --- deadlines -----------------------------------------------------------------------
    def _follow(self) -> None:
        """Which part of a request the connection is waiting for, and its deadline."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # Waiting for a request line: idle keep-alive (uvicorn's timer) until a byte comes.
            if self.timeout_keep_alive_task is None and self._reading != "headers":
                self._arm("headers")
            elif self.timeout_keep_alive_task is not None:
                self._disarm()
                self._reading = "idle"
        elif state is h11.SEND_BODY:
            if self._reading != "body":
                self._arm("body")
        else:  # the request is in (DONE), or the connection is ending
            self._disarm()
            self._reading = "response"

    def _arm(self, part: str) -> None:
        self._disarm()
        self._reading = part
        seconds = self.limits.header_timeout if part == "headers" else self.limits.body_timeout
        self._deadline = self.loop.call_later(seconds, self._close, f"{part} not received in time")

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close(self, why: str) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        log.info("portal connection closed: %s", why, extra={"action": "timeout"})
        if self.conn.our_state is h11.IDLE or self.conn.our_state is h11.DONE:
            with contextlib.suppress(h11.LocalProtocolError):
                self.conn.send(h11.ConnectionClosed())
        self.transport.close()


def portal_server(app: Any, settings: Settings) -> uvicorn.Server:
    """The uvicorn server `mailmoat serve` runs the portal on (`server.run()` blocks)."""
    limits = PortalLimits(settings)
    protocol = type("PortalH11Protocol", (LimitedH11Protocol,), {"limits": limits})
    config = uvicorn.Config(
        app, host=settings.portal_host, port=settings.portal_port, http=protocol,
        log_level="warning", server_header=False,
        limit_concurrency=settings.portal_max_concurrency,
        timeout_keep_alive=settings.portal_keepalive_seconds,
        h11_max_incomplete_event_size=16 * 1024)
    return uvicorn.Server(config)
