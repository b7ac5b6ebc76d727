"""The portal's connection limits under `mailmoat serve` (issue 19, item 7). An attack run held 2,000
portal connections with partial headers open for at least 120 s. Now headers and bodies have
deadlines, connections are capped per client address and in total, and a keep-alive connection
serves a bounded number of requests. Bounded: one-second deadlines, small caps, loopback only."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEMO_CONFIG, FIXTURES, free_port, stop_process, wait_for_smtp

ROOT = Path(__file__).resolve().parents[2]
PER_IP = 20
TOTAL = 60


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data = tmp_path_factory.mktemp("portal-limits") / "var"
    smtp_port, portal_port = free_port(), free_port()
    env = {**os.environ, "MAILMOAT_DATA_DIR": str(data), "MAILMOAT_CONFIG": str(DEMO_CONFIG),
           "MAILMOAT_MODE": "test", "MAILMOAT_WORKERS": "1",
           "MAILMOAT_SMTP_PORT": str(smtp_port), "MAILMOAT_PORTAL_PORT": str(portal_port),
           "MAILMOAT_DNS_ZONE": str(FIXTURES / "empty-zone.json"),
           "MAILMOAT_PORTAL_HEADER_TIMEOUT_SECONDS": "1", "MAILMOAT_PORTAL_BODY_TIMEOUT_SECONDS": "1.5",
           "MAILMOAT_PORTAL_KEEPALIVE_SECONDS": "2", "MAILMOAT_PORTAL_KEEPALIVE_REQUESTS": "3",
           "MAILMOAT_PORTAL_MAX_CONNECTIONS_PER_IP": str(PER_IP),
           "MAILMOAT_PORTAL_MAX_CONNECTIONS": str(TOTAL)}
    proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_smtp(smtp_port, proc), "serve did not start"
        deadline = time.monotonic() + 20
        while not _served(portal_port):
            assert time.monotonic() < deadline, "the portal did not start"
            time.sleep(0.1)
        yield portal_port
    finally:
        stop_process(proc, timeout=20)


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def _served(port: int, source: str = "127.0.0.1") -> bool:
    try:
        with _connect(port, source) as sock:
            sock.sendall(b"GET /k HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """The server hung up (EOF or reset) within `within` seconds, having sent no page."""
    sock.settimeout(within)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True
            if chunk.startswith(b"HTTP/1.1 200"):
                return False
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.timeout(90)
def test_partial_headers_are_cut_off_at_the_header_deadline(portal: int) -> None:
    held = []
    try:
        for n in range(TOTAL - 5):  # from many addresses, under both caps
            sock = _connect(portal, f"127.0.{n % 200}.9")
            sock.sendall(b"GET /k HTTP/1.1\r\nHost: portal\r\nX-Slow: ")
            held.append(sock)
        started = time.monotonic()
        for sock in held:
            sock.sendall(b"a")  # a byte now and then does not extend the deadline
        assert all(_closed_by_server(s, 5) for s in held)
        assert time.monotonic() - started < 6
    finally:
        for sock in held:
            sock.close()
    assert _served(portal)


@pytest.mark.timeout(60)
def test_a_slow_body_is_cut_off_at_the_body_deadline(portal: int) -> None:
    with _connect(portal) as sock:
        sock.sendall(b"POST /k/signin HTTP/1.1\r\nHost: portal\r\nContent-Type: application/"
                     b"x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\naddress=")
        started = time.monotonic()
        closed = False
        try:
            while time.monotonic() - started < 10:
                sock.sendall(b"a")
                time.sleep(0.2)
        except OSError:
            closed = True
        if not closed:
            closed = _closed_by_server(sock, 1)
        assert closed and time.monotonic() - started < 5


@pytest.mark.timeout(60)
def test_connections_beyond_the_per_address_cap_are_closed_at_once(portal: int) -> None:
    source = "127.77.0.1"
    held = [_connect(portal, source) for _ in range(PER_IP + 10)]
    try:
        time.sleep(0.3)  # well inside the header deadline: only the cap can have closed any
        readable, _, _ = select.select(held, [], [], 0.2)
        closed = [s in readable and _closed_by_server(s, 0.1) for s in held]
        assert closed.count(True) == 10 and not any(closed[:PER_IP])
        assert _served(portal, "127.78.0.1")  # another address is served meanwhile
    finally:
        for sock in held:
            sock.close()


@pytest.mark.timeout(60)
def test_a_keepalive_connection_serves_a_bounded_number_of_requests(portal: int) -> None:
    with _connect(portal) as sock:
        reader = sock.makefile("rb")
        for _ in range(3):
            sock.sendall(b"GET /k HTTP/1.1\r\nHost: portal\r\n\r\n")
            assert reader.readline().startswith(b"HTTP/1.1 200")
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
        sock.settimeout(1)  # well before the keep-alive timeout (2 s): the request limit closed it
        assert reader.read() == b""  # the third response was the last on this connection
