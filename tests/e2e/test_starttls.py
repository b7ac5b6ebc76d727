"""Inbound STARTTLS on the local listener (issue 18, item 1): smtplib's starttls on loopback,
the Received header and the message log name the TLS version and cipher, required TLS refuses
MAIL FROM in clear, a replaced certificate serves the next connection, and `make run`'s
self-signed pair is made once."""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mailmoat.bootstrap import bootstrap
from mailmoat.local.server import Gateway
from mailmoat.local.tls import TlsContextProvider, ensure_self_signed, listener_tls
from tests.conftest import DEMO_CONFIG, FIXTURES, ROOT, free_port, make_settings, wait_for_smtp

MESSAGE = b"From: s@sender.example\r\nTo: alice@example.test\r\nSubject: tls\r\n\r\nhello\r\n"


def _pair(directory: Path, hostname: str) -> tuple[Path, Path]:
    return ensure_self_signed(directory, hostname)


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a self-signed test certificate; we read it back
    return context


def _gateway(tmp_path: Path, **overrides: Any) -> Gateway:
    gw = Gateway(bootstrap(make_settings(tmp_path, smtp_port=free_port(), **overrides)))
    gw.start()
    return gw


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[Gateway]:
    cert, key = _pair(tmp_path / "certs", "mx.example.test")
    gw = _gateway(tmp_path, tls_cert=cert, tls_key=key)
    yield gw
    gw.stop()


def _starttls_certificate(smtp: smtplib.SMTP) -> bytes:
    """STARTTLS on an open session; the DER certificate the listener offered."""
    smtp.starttls(context=_client_context())
    sock = smtp.sock
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def _peer_subject(port: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        return x509.load_der_x509_certificate(_starttls_certificate(smtp)).subject.rfc4514_string()


@pytest.mark.timeout(60)
def test_starttls_delivers_and_records_version_and_cipher(tls_gateway: Gateway) -> None:
    port = tls_gateway.runtime.settings.smtp_port
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("starttls")
        smtp.starttls(context=_client_context())
        sock = smtp.sock
        assert isinstance(sock, ssl.SSLSocket)
        version, cipher = sock.version(), sock.cipher()
        assert version in ("TLSv1.2", "TLSv1.3") and cipher is not None
        smtp.sendmail("s@sender.example", ["alice@example.test"], MESSAGE)
    assert tls_gateway.worker is not None and tls_gateway.worker.drain()
    (record,) = tls_gateway.runtime.services.log.recent()
    assert record.state == "delivered"
    assert record.tls == f"{version} with cipher {cipher[0]}"
    box = tls_gateway.runtime.settings.data_dir / "maildir" / "example.test" / "alice" / "new"
    (delivered,) = box.iterdir()
    received = delivered.read_bytes().split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ")
    assert f"(using {version} with cipher {cipher[0]})".encode() in received
    assert b"(mailmoat) with ESMTPS id" in received


@pytest.mark.timeout(60)
def test_a_session_in_clear_is_recorded_without_tls(tls_gateway: Gateway) -> None:
    with smtplib.SMTP("127.0.0.1", tls_gateway.runtime.settings.smtp_port, timeout=10) as smtp:
        smtp.sendmail("s@sender.example", ["alice@example.test"], MESSAGE)
    assert tls_gateway.worker is not None and tls_gateway.worker.drain()
    (record,) = tls_gateway.runtime.services.log.recent()
    assert record.state == "delivered" and record.tls is None


@pytest.mark.timeout(60)
def test_required_tls_refuses_mail_from_before_starttls(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path / "certs", "mx.example.test")
    gw = _gateway(tmp_path, tls_cert=cert, tls_key=key, tls_required=True)
    try:
        with smtplib.SMTP("127.0.0.1", gw.runtime.settings.smtp_port, timeout=10) as smtp:
            smtp.ehlo("client.example")
            code, reply = smtp.mail("s@sender.example")
            assert code == 530, reply  # RFC 3207 §4
            assert b"STARTTLS" in reply
            smtp.starttls(context=_client_context())
            smtp.ehlo("client.example")
            assert smtp.mail("s@sender.example")[0] == 250
            assert smtp.rcpt("alice@example.test")[0] == 250
        assert gw.runtime.services.log.recent() == []
    finally:
        gw.stop()


def test_required_tls_without_a_certificate_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MAILMOAT_TLS_REQUIRED"):
        listener_tls(make_settings(tmp_path, tls_required=True))
    assert listener_tls(make_settings(tmp_path)) is None  # no TLS unless asked for


@pytest.mark.timeout(60)
def test_a_replaced_certificate_serves_the_next_connection(tmp_path: Path) -> None:
    live = tmp_path / "live"
    cert, key = _pair(live, "old.example.test")
    gw = _gateway(tmp_path, tls_cert=cert, tls_key=key)
    try:
        assert gw.smtp is not None and gw.smtp.tls is not None
        gw.smtp.tls.check_seconds = 0.2
        port = gw.runtime.settings.smtp_port
        assert _peer_subject(port) == "CN=old.example.test"
        new_cert, new_key = _pair(tmp_path / "next", "new.example.test")
        time.sleep(0.3)  # past the check interval
        shutil.copyfile(new_key, key)
        shutil.copyfile(new_cert, cert)
        deadline = time.monotonic() + 10
        while (subject := _peer_subject(port)) != "CN=new.example.test":
            assert time.monotonic() < deadline, subject
            time.sleep(0.1)
    finally:
        gw.stop()


def test_a_bad_new_pair_keeps_the_old_context(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = _pair(tmp_path / "live", "old.example.test")
    now = [0.0]
    provider = TlsContextProvider(cert, key, check_seconds=1.0, clock=lambda: now[0])
    first = provider.current()
    other_cert, _ = _pair(tmp_path / "other", "other.example.test")
    shutil.copyfile(other_cert, cert)  # a certificate whose key is not the key file's
    os.utime(cert, ns=(time.time_ns(), time.time_ns() + 10**9))
    now[0] = 5.0
    assert provider.current() is first
    assert "does not load" in caplog.text
    new_cert, new_key = _pair(tmp_path / "next", "new.example.test")
    shutil.copyfile(new_key, key)
    shutil.copyfile(new_cert, cert)
    now[0] = 10.0
    renewed = provider.current()
    assert renewed is not first
    now[0] = 10.5  # within the interval: no stat, the same context
    assert provider.current() is renewed


def test_self_signed_pair_is_made_once_and_reused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tls_self_signed=True)
    first = listener_tls(settings)
    assert first is not None
    cert, key = settings.data_dir / "tls" / "cert.pem", settings.data_dir / "tls" / "key.pem"
    assert first.cert == cert and first.key == key
    assert key.stat().st_mode & 0o777 == 0o600
    made = cert.read_bytes(), key.read_bytes()
    second = listener_tls(settings)
    assert second is not None
    assert (cert.read_bytes(), key.read_bytes()) == made
    subject = x509.load_pem_x509_certificate(made[0]).subject.rfc4514_string()
    assert subject == f"CN={settings.smtp_hostname}"
    # An operator's certificate wins over the generated one.
    operator = _pair(tmp_path / "operator", "mx.example.test")
    chosen = listener_tls(make_settings(tmp_path, tls_self_signed=True, tls_cert=operator[0],
                                        tls_key=operator[1]))
    assert chosen is not None and chosen.cert == operator[0]


def _serve(data_dir: Path, smtp_port: int, **env: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "MAILMOAT_DATA_DIR": str(data_dir), "MAILMOAT_CONFIG": str(DEMO_CONFIG),
                   "MAILMOAT_MODE": "test", "MAILMOAT_SMTP_PORT": str(smtp_port),
                   "MAILMOAT_PORTAL_PORT": str(free_port()), "MAILMOAT_METRICS_PORT": "0",
                   "MAILMOAT_DNS_ZONE": str(FIXTURES / "empty-zone.json"), **env}
    proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if wait_for_smtp(smtp_port, proc):
        return proc
    raise AssertionError(f"serve did not start: {proc.stdout.read().decode() if proc.stdout else ''}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.communicate(timeout=20)


@pytest.mark.timeout(120)
def test_serve_with_self_signed_offers_starttls_and_reuses_its_pair(tmp_path: Path) -> None:
    """What `make run` does (MAILMOAT_TLS_SELF_SIGNED=true): a pair made at the first start,
    the same certificate offered after a restart; the message log's JSON names the TLS."""
    data_dir, port = tmp_path / "var", free_port()
    subjects: list[bytes] = []
    for _ in range(2):
        proc = _serve(data_dir, port, MAILMOAT_TLS_SELF_SIGNED="true")
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                subjects.append(_starttls_certificate(smtp))
                smtp.sendmail("s@sender.example", ["alice@example.test"], MESSAGE)
        finally:
            _stop(proc)
    assert subjects[0] == subjects[1]
    assert (data_dir / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    log = subprocess.run([sys.executable, "-m", "mailmoat.local.cli", "--data-dir", str(data_dir),
                          "log", "--json"], cwd=ROOT, capture_output=True, check=True, timeout=60,
                         env={**os.environ, "MAILMOAT_CONFIG": str(DEMO_CONFIG)})
    rows = json.loads(log.stdout)
    assert len(rows) == 2 and all(row["tls"].startswith("TLSv1.") for row in rows), rows


@pytest.mark.timeout(60)
def test_serve_refuses_required_tls_without_a_certificate(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT,
                          capture_output=True, timeout=50,
                          env={**os.environ, "MAILMOAT_DATA_DIR": str(tmp_path / "var"),
                               "MAILMOAT_CONFIG": str(DEMO_CONFIG), "MAILMOAT_MODE": "test",
                               "MAILMOAT_SMTP_PORT": str(free_port()),
                               "MAILMOAT_PORTAL_PORT": str(free_port()), "MAILMOAT_METRICS_PORT": "0",
                               "MAILMOAT_TLS_REQUIRED": "true"})
    assert proc.returncode == 1
    assert b"MAILMOAT_TLS_REQUIRED needs a certificate" in proc.stderr
