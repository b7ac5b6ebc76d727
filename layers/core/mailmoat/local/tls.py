"""The certificate the SMTP listener offers on STARTTLS: an ssl.SSLContext built from the
operator's certificate and key files and built again when they change, so a renewed certificate
(certbot, an ACME hook) serves the next connection without a restart; and `make run`'s
self-signed pair."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailmoat.settings import Settings

log = logging.getLogger("mailmoat.local.tls")

Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for one certificate chain and key: TLS 1.2 at least (RFC 8996 retires
    1.0 and 1.1), Python's default ciphers, no client certificate asked for (a sending MTA
    rarely has one, and aiosmtpd warns about any other verify mode)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    return context


def _stamp(cert: Path, key: Path) -> Stamp | None:
    try:
        a, b = cert.stat(), key.stat()
    except OSError:
        return None
    return (a.st_mtime_ns, a.st_size, a.st_ino), (b.st_mtime_ns, b.st_size, b.st_ino)


class TlsContextProvider:
    """The context for the next connection. The files are looked at no more often than every
    `check_seconds` (each new connection asks; a stat is cheap, thousands a second are not).
    A new pair that does not load (half-written, key and certificate not matching) keeps the
    previous context and logs an error; it is tried again when the files change again."""

    def __init__(self, cert: Path, key: Path, check_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cert, self.key = cert, key
        self.check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = _stamp(cert, key)
        self._context = server_context(cert, key)  # a first pair that does not load stops serve
        self._checked = clock()

    def current(self) -> ssl.SSLContext:
        with self._lock:
            now = self._clock()
            if now - self._checked >= self.check_seconds:
                self._checked = now
                self._reload_if_changed()
            return self._context

    def _reload_if_changed(self) -> None:
        stamp = _stamp(self.cert, self.key)
        if stamp == self._stamp:
            return
        self._stamp = stamp  # this version of the files is not tried again
        if stamp is None:
            log.error("TLS certificate or key file missing; the previous certificate stays in use",
                      extra={"action": "tls-reload-failed"})
            return
        try:
            context = server_context(self.cert, self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("TLS certificate or key does not load (%s); the previous certificate stays "
                      "in use", exc, extra={"action": "tls-reload-failed"})
            return
        self._context = context
        log.warning("TLS certificate reloaded from %s", self.cert, extra={"action": "tls-reloaded"})


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed pair for `make run` (cert.pem, key.pem with mode 0600), generated once into
    `directory` and reused after; never for a real deployment."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    _write(key, private.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()), 0o600)
    _write(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    log.warning("generated a self-signed TLS certificate for %s in %s", hostname, directory,
                extra={"action": "tls-self-signed"})
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its mode (never world-readable for a moment), then renamed into place.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as file:
        os.fchmod(file.fileno(), mode)  # a leftover temporary file keeps its old mode otherwise
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def listener_tls(settings: Settings) -> TlsContextProvider | None:
    """The STARTTLS certificate `mailmoat serve` offers: the operator's pair, else (MAILMOAT_TLS_
    SELF_SIGNED, `make run`) a generated one in the data dir, else none (no STARTTLS offered).
    Required TLS without a certificate refuses to start rather than take mail in clear."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ValueError("set both MAILMOAT_TLS_CERT and MAILMOAT_TLS_KEY, or neither")
    if settings.tls_cert is not None and settings.tls_key is not None:
        cert, key = settings.tls_cert, settings.tls_key
    elif settings.tls_self_signed:
        cert, key = ensure_self_signed(settings.data_dir / "tls", settings.smtp_hostname)
    elif settings.tls_required:
        raise ValueError("MAILMOAT_TLS_REQUIRED needs a certificate (MAILMOAT_TLS_CERT/_KEY)")
    else:
        return None
    return TlsContextProvider(cert, key, check_seconds=settings.tls_reload_check_seconds)
