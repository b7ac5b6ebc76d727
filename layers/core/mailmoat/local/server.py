"""The embedded gateway: aiosmtpd ingress, the pipeline worker (a thread here, or N worker
processes: mailmoat.local.workers), and the portal under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from mailmoat.context import Envelope
from mailmoat.local.tls import TlsContextProvider, listener_tls
from mailmoat.ports import StageInbox
from mailmoat.runner import new_message_id
from mailmoat.runtime import Runtime
from mailmoat.smtp_text import has_control
from mailmoat.states import MessageState

if TYPE_CHECKING:
    from mailmoat.local.workers import WorkerPool

Accept = Callable[[bytes, Envelope, str], str]

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
    line = f"Received: from {helo} ({rdns} [{addr}])\r\n"
    if envelope.tls:  # Postfix's wording; "ESMTPS" is RFC 3848's protocol name for it
        line += f"\t(using {_clean(envelope.tls)})\r\n"
    line += (f"\tby {_clean(hostname)} (mailmoat) with ESMTP{'S' if envelope.tls else ''}"
             f" id {message_id}")
    if len(envelope.rcpt_to) == 1:  # naming every recipient would leak a Bcc list
        line += f"\r\n\tfor <{_clean(envelope.rcpt_to[0])}>"
    line += f"; {format_datetime(now)}\r\n"
    return line.encode("utf-8", "replace")


def tls_description(ssl_object: ssl.SSLObject | None) -> str | None:
    """'TLSv1.3 with cipher TLS_AES_256_GCM_SHA384' (Postfix's wording in its Received header)
    for a session that said STARTTLS; None for one in clear."""
    cipher = ssl_object.cipher() if ssl_object is not None else None
    if ssl_object is None or cipher is None:
        return None
    return f"{ssl_object.version() or cipher[1]} with cipher {cipher[0]}"


def _clean(value: str) -> str:
    return "".join(ch for ch in value if ch.isprintable() and ch not in "()<>;\\\r\n")[:200]


class IngressHandler:
    """RCPT: only registered recipients (550 5.1.1 otherwise). DATA: store durably, then 250."""

    def __init__(self, runtime: Runtime, accept: Accept | None = None) -> None:
        self.runtime = runtime
        self.accept: Accept = accept or runtime.accept

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                          address: str, mail_options: list[str]) -> str:
        if has_control(address):  # a CR here would become a header line (mailmoat.smtp_text)
            log.info("sender refused: control character", extra={"action": "501"})
            return "501 5.1.7 Bad sender address syntax"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        if has_control(address):
            log.info("recipient refused: control character", extra={"action": "501"})
            return "501 5.1.3 Bad recipient address syntax"
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
        tls = tls_description(session.ssl.get("ssl_object")) if session.ssl else None
        env = Envelope(client_ip=peer, helo=session.host_name or None,
                       mail_from=envelope.mail_from or "", rcpt_to=list(envelope.rcpt_tos),
                       tls=tls)
        message_id = new_message_id()
        hostname = self.runtime.settings.smtp_hostname
        raw = received_header(message_id, env, hostname, None) + raw
        loop = asyncio.get_running_loop()
        try:
            # One 250 for the envelope; the runner makes one message per tenant of it.
            await loop.run_in_executor(None, self.accept, raw, env, message_id)
        except Exception:
            log.exception("could not store message")
            return "451 4.3.0 Temporary storage failure, try again later"
        return f"250 2.0.0 Ok: queued as {message_id}"


@dataclass
class Worker:
    """Runs the stages the in-process queue hands out, one at a time, off the SMTP event loop;
    a retry waits in the queue until its time comes. `owns`: the messages of this worker's
    partition, when it is one of several processes (None: all of them)."""

    runtime: Runtime
    owns: Callable[[str], bool] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _busy: bool = False
    processed: int = 0

    @property
    def inbox(self) -> StageInbox:
        assert self.runtime.inbox is not None, "the local runtime runs its stages in process"
        return self.runtime.inbox

    def start(self) -> None:
        from mailmoat.preload import preload

        preload(self.runtime.settings)  # no message waits on a first-use import (its doc)
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="mailmoat-worker", daemon=True)
        self._thread.start()

    def recover(self) -> int:
        """Everything accepted but not finished (a crash, a restart) is queued again."""
        if self.owns is None:
            count = self.runtime.recover()
        else:
            now = self.runtime.services.clock.now()
            mine = [r for r in self.runtime.services.log.unfinished() if self.owns(r.id)]
            for record in mine:
                self.runtime.runner.resume(record, now)
            count = len(mine)
        if count:
            log.info("recovering %d unfinished messages", count)
        return count

    def _loop(self) -> None:
        while not self._stop.is_set():
            ref = self.inbox.take(timeout=0.5)
            if ref is None:
                continue
            self._busy = True
            try:
                self.runtime.runner.step(ref)
                self.processed += 1
            except Exception as exc:  # the worker must survive anything one message does
                log.exception("processing failed", extra={"message_id": ref.message_id,
                                                           "stage": ref.stage})
                try:
                    self.runtime.services.log.update(ref.message_id, state=MessageState.HELD,
                                                     error=f"{type(exc).__name__}: {exc}"[:300])
                except Exception:
                    log.exception("could not record held state")
            finally:
                self._busy = False

    def stop(self, grace: float = 10.0) -> bool:
        """Take nothing more; let the stage in flight finish within `grace` seconds. What is
        still queued stays unfinished in the message log, for `recover` at the next start.
        False when the stage was still running (the process exits anyway: it is retried then)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=grace)
            if self._thread.is_alive():
                log.warning("a stage was still running after %.0f s; it runs again at the next "
                            "start", grace, extra={"action": "shutdown"})
                return False
        return True

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is due and nothing is in flight (tests, shutdown); retries that
        wait for later do not count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.inbox.due() and not self._busy:
                return True
            time.sleep(0.02)
        return False


@dataclass
class ConnectionSlots:
    """Open SMTP sessions, in total and per client address (one event loop: no lock needed)."""

    total_limit: int
    per_ip_limit: int
    total: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)

    def take(self, ip: str) -> bool:
        if self.total >= self.total_limit or self.per_ip.get(ip, 0) >= self.per_ip_limit:
            return False
        self.total += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return True

    def give_back(self, ip: str) -> None:
        self.total -= 1
        left = self.per_ip.get(ip, 1) - 1
        if left:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)


class LimitedSMTP(SMTP):
    """aiosmtpd's session with connection limits: 6,000 idle connections from one address were
    all accepted before (issue 19). Beyond a limit the client hears 421 4.7.0 and is closed."""

    slots: ConnectionSlots

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # the first transport, not the one STARTTLS puts under it
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) else "?"
            if not self.slots.take(ip):
                log.warning("connection refused: limit reached", extra={"action": "421"})
                self._slot_ip: str | None = None
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
                transport.close()
                return
            self._slot_ip = ip
        super().connection_made(transport)

    data_timeout: float = 600.0

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd times a session out only between commands: DATA itself (its bytes, however
        # slowly they come, and our answer) gets its own deadline, then the command timeout again.
        self._reset_timeout(self.data_timeout)
        try:
            await super().smtp_DATA(arg)
        finally:
            if self.transport is not None:
                self._reset_timeout()

    def connection_lost(self, error: Exception | None) -> None:
        ip = getattr(self, "_slot_ip", None)
        if self.session is None:  # refused before a session began
            return
        if ip is not None:
            self.slots.give_back(ip)
            self._slot_ip = None
        super().connection_lost(error)


class IngressController(Controller):
    def __init__(self, runtime: Runtime, accept: Accept | None = None, **kwargs: Any) -> None:
        self.runtime = runtime
        self.tls: TlsContextProvider | None = listener_tls(runtime.settings)
        super().__init__(IngressHandler(runtime, accept), hostname=runtime.settings.smtp_host,
                         port=runtime.settings.smtp_port, **kwargs)

    def factory(self) -> SMTP:
        settings = self.runtime.settings
        if not hasattr(self, "_slots"):
            self._slots = ConnectionSlots(settings.smtp_max_connections,
                                          settings.smtp_max_connections_per_ip)
        session = LimitedSMTP(self.handler, hostname=settings.smtp_hostname,
                              data_size_limit=settings.max_message_bytes, enable_SMTPUTF8=True,
                              decode_data=False, ident="mailmoat ESMTP",
                              timeout=settings.smtp_command_timeout_seconds,
                              # Per connection: a renewed certificate serves the next session.
                              tls_context=self.tls.current() if self.tls else None,
                              require_starttls=settings.tls_required)
        session.slots = self._slots
        session.data_timeout = settings.smtp_data_timeout_seconds
        return session


@dataclass
class Gateway:
    """SMTP listener + worker (+ portal, started by the CLI). `start()` returns once listening.

    `workers` 1: the stages run on a thread of this process, with this runtime's adapters.
    More: that many worker processes (mailmoat.local.workers), each with its own composition
    root built from the runtime's settings; this process only accepts (one writer on the accept
    path) and hands each message to the worker its id belongs to."""

    runtime: Runtime
    workers: int = 1
    worker: Worker | None = None
    pool: WorkerPool | None = None
    smtp: IngressController | None = None

    def start(self) -> None:
        self.worker = Worker(self.runtime)
        accept: Accept | None = None
        if self.runtime.settings.hold_processing:
            log.warning("MAILMOAT_HOLD_PROCESSING is set: mail is accepted and stored, not processed")
        elif self.workers > 1:
            from mailmoat.local.workers import WorkerPool

            self.pool = WorkerPool(self.runtime.settings, self.workers)
            self.pool.start()
            accept = replace(self.runtime.runner, queue=self.pool).accept
        else:
            self.worker.start()
        self.smtp = IngressController(self.runtime, accept)
        self.smtp.start()

    def stop(self) -> None:
        """The listener first (new connections are refused), then the workers, each finishing
        the stage it is running (settings.shutdown_grace_seconds)."""
        if self.smtp:
            self.smtp.stop()
        if self.pool:
            self.pool.stop()
        if self.worker:
            self.worker.stop(grace=self.runtime.settings.shutdown_grace_seconds)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # Same option the servers use, so connections in TIME_WAIT after a restart don't count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
