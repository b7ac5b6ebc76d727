"""SIGTERM for `mailmoat serve` (systemd's stop, `docker stop`, `kill`): a graceful stop that
exits 0, instead of the death by signal uvicorn would hand us.

uvicorn catches SIGTERM while it serves, shuts the portal down, then restores the handler it
found and raises the signal again. With the default handler that kills the process before the
CLI's `finally` runs, so the SMTP listener, a worker half-way through a delivery and the
scheduler all died with it. With this handler installed first, the raised signal lands here,
`Server.run()` returns, and the CLI stops the gateway: listener closed (new connections are
refused), each worker finishes its stage (Gateway.stop's grace), the rest waits in the message
log for the next start (Worker.recover)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Protocol

log = logging.getLogger("mailmoat.local")


class Stoppable(Protocol):
    """uvicorn.Server's flag its main loop polls."""

    should_exit: bool


def stop_on_sigterm(server: Stoppable) -> None:
    """Route SIGTERM to a graceful stop of `server` (before and after uvicorn's own handler)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be set from the main thread (a test running serve in-process)

    seen = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        if not seen.is_set():
            seen.set()
            log.warning("SIGTERM: stopping (listener closed, workers finish their stage)",
                        extra={"action": "shutdown"})
        server.should_exit = True

    signal.signal(signal.SIGTERM, handle)
