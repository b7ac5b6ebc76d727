"""Builders for isolation and portal tests: every file and message is made in the test."""

from __future__ import annotations

import io
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pikepdf
import pyzipper

from mailmoat.context import Envelope, MessageContext
from mailmoat.ports import AntivirusResult
from mailmoat.runtime import Runtime, bootstrap
from mailmoat.scan.engine import CACHE
from mailmoat.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "config" / "demo.toml"
ZONE = ROOT / "tests" / "fixtures" / "empty-zone.json"
PASSWORD = "s3cret-パス"
EICAR_LIKE = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$MAILMOAT-TEST-SIGNATURE!$H+H*"
XSS = "<img src=x onerror=alert(1)>"


def aes_zip(members: dict[str, bytes], password: str = PASSWORD) -> bytes:
    buf = io.BytesIO()
    with pyzipper.AESZipFile(buf, "w", compression=pyzipper.ZIP_DEFLATED,
                             encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(password.encode("utf-8"))
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def clean_pdf() -> bytes:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


def message(*files: tuple[str, bytes, str], subject: str = "請求書の送付",
            body: str = f"パスワードは {PASSWORD} です。\n", html: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Sender <sender@sender.example>"
    msg["To"] = "alice@example.test, bob@example.test"
    msg["Subject"] = subject
    msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0900"
    msg["Message-ID"] = "<isolation-test@sender.example>"
    msg["Received"] = ("from mx.sender.example (mx.sender.example [203.0.113.5]) by "
                       "mx.example.test with ESMTP id abc; Fri, 27 Nov 2026 10:00:01 +0900")
    msg.set_content(body)
    if html:
        msg.add_alternative(f"<html><body><p>{body}</p></body></html>", subtype="html")
    for name, data, ctype in files:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


@dataclass
class SignatureAntivirus:
    """Test antivirus: flags the test signature, like clamd would flag EICAR."""

    def scan(self, data: bytes) -> AntivirusResult:
        if EICAR_LIKE in data:
            return AntivirusResult(True, "Mailmoat.Test-Signature")
        return AntivirusResult(False)


def make_runtime(data_dir: Path, **settings: object) -> Runtime:
    CACHE.clear()  # results are cached per antivirus presence; start each runtime clean
    values: dict[str, object] = {"mode": "test", "config": DEMO, "dns_zone": ZONE, **settings}
    runtime = bootstrap(Settings(**values), data_dir=data_dir)  # type: ignore[arg-type]
    runtime.services.antivirus = SignatureAntivirus()
    return runtime


RECIPIENTS = ["alice@example.test", "bob@example.test"]


OFFLINE = ("authenticate", "scan", "isolate", "rewrite")


def analyse(runtime: Runtime, raw: bytes, rcpt: list[str] | None = None,
            stages: tuple[str, ...] = OFFLINE, message_id: str | None = None) -> MessageContext:
    return runtime.analyse(raw, Envelope(mail_from="sender@sender.example",
                                         rcpt_to=list(rcpt or RECIPIENTS)),
                           stages=stages, message_id=message_id)
