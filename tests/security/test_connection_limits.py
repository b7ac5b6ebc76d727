"""SMTP connection limits (issue 19, item 7): 6,000 idle connections from one address were all
accepted. Now a client address gets at most `smtp_max_connections_per_ip` sessions and the
listener `smtp_max_connections`; beyond them 421 4.7.0 and close. An idle session is closed
after the command timeout. Bounded: small limits, a one-second timeout."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.local.server import Gateway
from tests.conftest import free_port, make_settings


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(bootstrap(make_settings(tmp_path, smtp_port=free_port(), smtp_max_connections=8,
                                         smtp_max_connections_per_ip=5,
                                         smtp_command_timeout_seconds=1.5)))
    gw.start()
    yield gw
    gw.stop()


def _greeting(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock, sock.makefile("rb").readline()


@pytest.mark.timeout(60)
def test_per_address_and_total_limits_answer_421_and_free_their_slots(gateway: Gateway) -> None:
    port = gateway.runtime.settings.smtp_port
    held: list[socket.socket] = []
    try:
        first = [_greeting(port) for _ in range(12)]
        held += [s for s, _ in first]
        codes = [g[:3] for _, g in first]
        assert codes == [b"220"] * 5 + [b"421"] * 7, codes
        assert first[5][1].startswith(b"421 4.7.0")
        others = [_greeting(port, "127.0.0.2") for _ in range(4)]  # total 8: three more fit
        held += [s for s, _ in others]
        assert [g[:3] for _, g in others] == [b"220"] * 3 + [b"421"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the slots come back once the sessions are gone
        sock, greeting = _greeting(port)
        sock.close()
        if greeting.startswith(b"220") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert greeting.startswith(b"220")


@pytest.mark.timeout(60)
def test_an_idle_session_is_closed_after_the_command_timeout(gateway: Gateway) -> None:
    sock, greeting = _greeting(gateway.runtime.settings.smtp_port)
    assert greeting.startswith(b"220")
    started = time.monotonic()
    sock.settimeout(10)
    rest = b""
    while chunk := sock.recv(1024):  # say nothing; the server must hang up
        rest += chunk
    assert time.monotonic() - started < 8
    assert rest in (b"",) or rest.startswith(b"421"), rest  # aiosmtpd hangs up without a word
    sock.close()


@pytest.fixture
def slow_data_gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A long command timeout and a short DATA deadline: only the DATA deadline can end it."""
    gw = Gateway(bootstrap(make_settings(tmp_path, smtp_port=free_port(), smtp_command_timeout_seconds=60,
                                         smtp_data_timeout_seconds=1.5)))
    gw.start()
    yield gw
    gw.stop()


@pytest.mark.timeout(60)
def test_data_that_trickles_in_is_cut_off_at_the_data_deadline(slow_data_gateway: Gateway) -> None:
    sock, greeting = _greeting(slow_data_gateway.runtime.settings.smtp_port)
    assert greeting.startswith(b"220")
    reader = sock.makefile("rb")
    for command in (b"EHLO slow.example", b"MAIL FROM:<s@sender.example>", b"RCPT TO:<alice@example.test>",
                    b"DATA"):
        sock.sendall(command + b"\r\n")
        while (line := reader.readline())[3:4] == b"-":
            pass
        assert line[:1] in (b"2", b"3"), (command, line)
    started = time.monotonic()
    closed = False
    try:
        while time.monotonic() - started < 15:  # a byte every 0.2 s: each read is quick, the whole is not
            sock.sendall(b"x")
            time.sleep(0.2)
    except OSError:  # the server hung up: the write fails
        closed = True
    assert closed and time.monotonic() - started < 8
    sock.close()
