"""SMTP smuggling, outbound (issue 19, item 2). Inbound, DATA ends only at CRLF.CRLF, but a
bare `\\r.\\r` in a body we passed on went out unchanged and not dot-stuffed: a mailbox host
that ends DATA at `<CR>.<CR>` would take what follows for a second message from the trusted
gateway. Now every outbound byte stream has CRLF line ends (then smtplib dot-stuffs every line),
the ARC seal covers exactly those bytes, and the archive keeps the original byte for byte."""

from __future__ import annotations

import re
import smtplib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from mailmoat.adapters.smtp import SmtpMailer
from mailmoat.bootstrap import bootstrap
from mailmoat.local.server import Gateway
from tests.conftest import free_port, make_settings
from tests.faults.harness import smtp_config

SMUGGLED = (b"From: a@sender.example\r\nTo: alice@example.test\r\nSubject: hello\r\n"
            b"Message-ID: <smuggle@sender.example>\r\n\r\n"
            b"first line\r.\rMAIL FROM:<boss@example.test>\rRCPT TO:<alice@example.test>\rDATA\r"
            b"Subject: second, unchecked\r\rwire the money\r.\r\n"
            b"lf variant\n.\nQUIT\n"
            b"end\r\n")
LAX_END = re.compile(rb"\r\.\r|\n\.\n|(?<!\r)\n\.\r?\n|\r\.\r\n")  # what a lax host may take as the end


class WireRecorder:
    """A minimal SMTP server on loopback that records each DATA section's bytes exactly as they
    came over the wire (up to the proper CRLF.CRLF)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.data: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> WireRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        stream = conn.makefile("rb")
        conn.sendall(b"220 recorder ESMTP\r\n")
        while line := stream.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-recorder\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go on\r\n")
                wire = b""
                while not wire.endswith(b"\r\n.\r\n"):
                    chunk = stream.readline()
                    if not chunk:
                        return
                    wire += chunk
                self.data.append(wire)
                conn.sendall(b"250 2.0.0 kept\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


def _unstuffed(wire: bytes) -> bytes:
    body = wire[: -len(b".\r\n")]
    return b"".join(line[1:] if line.startswith(b".") else line for line in body.splitlines(keepends=True))


def test_smtp_mailer_sends_no_bare_line_end_and_stuffs_every_dot() -> None:
    with WireRecorder() as host:
        SmtpMailer("127.0.0.1", host.port, timeout=10).deliver("m1", "alice@example.test",
                                                               "a@sender.example", SMUGGLED)
    (wire,) = host.data
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", wire), "a bare CR or LF went out"
    assert not LAX_END.search(wire[:-5]), "a lax host could end DATA early"
    assert b"\r\n..\r\nMAIL FROM" in wire  # the dot line is stuffed
    assert wire.count(b"\r\n.\r\n") == 1


@pytest.fixture
def gateway_to_recorder(tmp_path: Path) -> Iterator[tuple[Gateway, WireRecorder]]:
    with WireRecorder() as host:
        settings = make_settings(tmp_path, smtp_port=free_port(), config=smtp_config(tmp_path, host.port),
                                 archive_dir=tmp_path / "archive")
        gw = Gateway(bootstrap(settings))
        gw.start()
        try:
            yield gw, host
        finally:
            gw.stop()


@pytest.mark.timeout(120)
def test_through_the_gateway_one_message_arrives_sealed_and_normalised(
        gateway_to_recorder: tuple[Gateway, WireRecorder]) -> None:
    gateway, host = gateway_to_recorder
    with smtplib.SMTP("127.0.0.1", gateway.runtime.settings.smtp_port, timeout=30) as smtp:
        smtp.sendmail("a@sender.example", ["alice@example.test"], SMUGGLED)
    assert gateway.worker is not None and gateway.worker.drain(timeout=60)
    (record,) = gateway.runtime.services.log.recent(5)
    assert record.state == "delivered", record.error
    (wire,) = host.data  # one message, not two
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", wire)
    assert not LAX_END.search(wire[:-5])
    delivered = _unstuffed(wire)
    public = (gateway.runtime.settings.data_dir / "arc" / "public.txt").read_text().split('"')[1]

    def dns(name: bytes | str, timeout: int = 5) -> bytes:
        return public.encode()

    assert dkim.arc_verify(delivered, dnsfunc=dns)[0] == dkim.CV_Pass  # sealed what went out
    stored = gateway.runtime.services.blobs.get(record.raw_key or f"raw/{record.id}")
    # The stored original keeps every bare CR as it came in (only the smtplib client above
    # dot-stuffed its LF-only line, as SMTP clients do).
    assert b"first line\r.\rMAIL FROM:<boss@example.test>\rRCPT TO:" in stored
