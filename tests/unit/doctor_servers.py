"""Loopback servers and certificates for the doctor's tests: a CA of the test's own with leaf
certificates for 127.0.0.1 (any expiry), aiosmtpd with or without STARTTLS, a clamd-like TCP
server answering VERSION, and an HTTP(S) server answering /healthz."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port

UTC = datetime.UTC


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


class DoctorCa:
    """A certificate authority made for one test; `ca_file` is what a client trusts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailmoat doctor test CA")])
        now = datetime.datetime.now(UTC)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=365))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def issue(self, label: str, *, days: float, name: str = "127.0.0.1") -> Pair:
        """A leaf for `name` (an IP or a DNS name) that expires in `days` (negative: expired)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(UTC)
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            alt = x509.DNSName(name)
        not_after = now + datetime.timedelta(days=days)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(min(now, not_after) - datetime.timedelta(days=30))
                .not_valid_after(not_after)
                .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
                .sign(self.key, hashes.SHA256()))
        pair = Pair(self.directory / f"{label}.crt", self.directory / f"{label}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return pair


class _Accept:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 taken"


@contextmanager
def smtp_server(tls: Pair | None) -> Iterator[int]:
    """aiosmtpd on loopback; offers STARTTLS with `tls`, none without."""
    port = free_port()
    kwargs = {"tls_context": tls.server_context()} if tls else {}
    controller = Controller(_Accept(), hostname="127.0.0.1", port=port, **kwargs)  # type: ignore[arg-type]
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@contextmanager
def clamd_server(answer: bytes | None) -> Iterator[str]:
    """A TCP server that answers clamd's zVERSION with `answer` (None: closes without a word)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                request = b""
                while not request.endswith(b"\0"):
                    chunk = conn.recv(64)
                    if not chunk:
                        break
                    request += chunk
                if answer is not None and request == b"zVERSION\0":
                    conn.sendall(answer + b"\0")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def clamd_version(signatures_at: datetime.datetime) -> bytes:
    # clamd's own format: ctime with a space-padded day ("Wed Dec  2 09:32:29 2026").
    return f"ClamAV 1.0.7/27479/{signatures_at.strftime('%a %b %e %H:%M:%S %Y')}".encode()


@contextmanager
def http_server(status: int, tls: Pair | None = None) -> Iterator[str]:
    """An HTTP server on loopback answering every GET with `status`; its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"ok": true}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 5
    if tls is not None:
        server.socket = tls.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
