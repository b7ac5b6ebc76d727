"""The embedded gateway: aiosmtpd ingress, an in-process pipeline worker, and the portal under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from mailmoat.context import Envelope
from mailmoat.runtime import Runtime, new_message_id

log = logging.getLogger("mailmoat.local")

MAX_RECIPIENTS = 100


def received_header(message_id: str, envelope: Envelope, hostname: str, peer_name: str | None,
                    now: datetime | None = None) -> bytes:
    """The trace header an MTA adds on acceptance (RFC 5321 §4.4); the authenticate stage
    reads the client IP back from it when the message is analysed offline later."""
    now = now or datetime.now(UTC)
    helo = _clean(envelope.helo or "unknown")
    ip = envelope.client_ip or "unknown"
    addr = f"IPv6:{ip}" if ":" in ip else ip
    rdns = _clean(peer_name) if peer_name else "unknown"
    line = (f"Received: from {helo} ({rdns} [{addr}])\r\n"
            f"\tby {_clean(hostname)} (mailmoat) with ESMTP id {message_id}")
    if len(envelope.rcpt_to) == 1:  # naming every recipient would leak a Bcc list
        line += f"\r\n\tfor <{_clean(envelope.rcpt_to[0])}>"
    line += f"; {format_datetime(now)}\r\n"
    return line.encode("utf-8", "replace")


def _clean(value: str) -> str:
    return "".join(ch for ch in value if ch.isprintable() and ch not in "()<>;\\\r\n")[:200]


class IngressHandler:
    """RCPT: only registered recipients (550 5.1.1 otherwise). DATA: store durably, then 250."""

    def __init__(self, runtime: Runtime, work: queue.Queue[str]) -> None:
        self.runtime = runtime
        self.work = work

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        loop = asyncio.get_running_loop()
        known = await loop.run_in_executor(None, self.runtime.is_known_recipient, address)
        if not known:
            log.info("recipient refused", extra={"action": "550"})
            return "550 5.1.1 User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode("utf-8", "surrogateescape")
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        env = Envelope(client_ip=peer, helo=session.host_name or None,
                       mail_from=envelope.mail_from or "", rcpt_to=list(envelope.rcpt_tos))
        message_id = new_message_id()
        hostname = self.runtime.settings.smtp_hostname
        raw = received_header(message_id, env, hostname, None) + raw
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.runtime.accept, raw, env, message_id)
        except Exception:
            log.exception("could not store message")
            return "451 4.3.0 Temporary storage failure, try again later"
        self.work.put(message_id)
        return f"250 2.0.0 Ok: queued as {message_id}"


@dataclass
class Worker:
    """Runs the pipeline for accepted messages, one at a time, off the SMTP event loop; retries
    deferred deliveries when their time comes."""

    runtime: Runtime
    work: queue.Queue[str] = field(default_factory=queue.Queue)
    poll_seconds: float = 5.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _in_flight: set[str] = field(default_factory=set)
    _queued: set[str] = field(default_factory=set)  # deferred ids already waiting in `work`
    processed: int = 0

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="mailmoat-worker", daemon=True)
        self._thread.start()

    def recover(self) -> int:
        """Everything accepted but not finished (a crash, a restart) is processed again."""
        pending = self.runtime.services.log.unfinished()
        for record in pending:
            self.work.put(record.id)
        if pending:
            log.info("recovering %d unfinished messages", len(pending))
        return len(pending)

    def _is_due(self, message_id: str) -> bool:
        """Deferred messages wait for their backoff; everything else is due at once."""
        logbook = self.runtime.services.log
        record = logbook.get(message_id)
        if record is None or record.state in ("delivered", "quarantined", "dropped", "held", "failed"):
            return False
        if record.state != "deferred":
            return True
        when = getattr(logbook, "next_attempt_at", lambda _i: None)(message_id)
        return when is None or when <= datetime.now(UTC).isoformat(timespec="microseconds")

    def _due_retries(self) -> None:
        for record in self.runtime.services.log.unfinished():
            if record.state != "deferred" or record.id in self._in_flight or record.id in self._queued:
                continue
            if self._is_due(record.id):
                self._queued.add(record.id)
                self.work.put(record.id)

    def _loop(self) -> None:
        last_poll = time.monotonic()
        while not self._stop.is_set():
            try:
                message_id = self.work.get(timeout=0.5)
            except queue.Empty:
                message_id = None
            if message_id is not None and message_id not in self._in_flight:
                self._queued.discard(message_id)
                self._in_flight.add(message_id)
                try:
                    if self._is_due(message_id):
                        self.runtime.process_stored(message_id)
                        self.processed += 1
                except Exception as exc:  # the worker must survive anything one message does
                    log.exception("processing failed", extra={"message_id": message_id})
                    try:
                        self.runtime.services.log.update(message_id, state="held",
                                                         error=f"{type(exc).__name__}: {exc}"[:300])
                    except Exception:
                        log.exception("could not record held state")
                finally:
                    self._in_flight.discard(message_id)
            if time.monotonic() - last_poll > self.poll_seconds:
                last_poll = time.monotonic()
                try:
                    self._due_retries()
                except Exception:
                    log.exception("retry scan failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the queue is empty and nothing is in flight (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.work.empty() and not self._in_flight:
                return True
            time.sleep(0.02)
        return False


class IngressController(Controller):
    def __init__(self, runtime: Runtime, work: queue.Queue[str], **kwargs: Any) -> None:
        self.runtime = runtime
        super().__init__(IngressHandler(runtime, work), hostname=runtime.settings.smtp_host,
                         port=runtime.settings.smtp_port, **kwargs)

    def factory(self) -> SMTP:
        settings = self.runtime.settings
        return SMTP(self.handler, hostname=settings.smtp_hostname,
                    data_size_limit=settings.max_message_bytes, enable_SMTPUTF8=True,
                    decode_data=False, ident="mailmoat ESMTP")


@dataclass
class Gateway:
    """SMTP listener + worker (+ portal, started by the CLI). `start()` returns once listening."""

    runtime: Runtime
    worker: Worker | None = None
    smtp: IngressController | None = None

    def start(self) -> None:
        self.worker = Worker(self.runtime)
        if self.runtime.settings.hold_processing:
            log.warning("MAILMOAT_HOLD_PROCESSING is set: mail is accepted and stored, not processed")
        else:
            self.worker.start()
        self.smtp = IngressController(self.runtime, self.worker.work)
        self.smtp.start()

    def stop(self) -> None:
        if self.smtp:
            self.smtp.stop()
        if self.worker:
            self.worker.stop()


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # Same option the servers use, so connections in TIME_WAIT after a restart don't count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
