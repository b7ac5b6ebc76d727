"""Builders for isolation and portal tests: every file and message is made in the test."""

from __future__ import annotations

import io
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pikepdf
import pyzipper

from mailmoat.bootstrap import bootstrap
from mailmoat.context import Envelope, MessageContext
from mailmoat.ports import AntivirusResult
from mailmoat.runtime import Runtime
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


def vba_project_bin() -> bytes:
    """A minimal OLE compound file shaped like a VBA project (VBA/dir, VBA/_VBA_PROJECT,
    PROJECT), enough for oletools to report macros. Every stream is 4096 bytes so that none
    lives in the mini stream, which keeps this writer short."""
    import struct

    end, free, fat_sect, nostream = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
    streams = [b"\x01\x00" + b"\x00" * 4094, b"\xcc\x61" + b"\x00" * 4094,
               b'ID="{00000000-0000-0000-0000-000000000000}"\r\nModule=Module1\r\n'.ljust(4096, b" ")]
    first = [3, 11, 19]  # sector 0: FAT, 1-2: directory, then 8 sectors per stream
    fat = [fat_sect, 2, end]
    for start in first:
        fat += [start + i + 1 for i in range(7)] + [end]
    fat += [free] * (128 - len(fat))

    def entry(name: str, kind: int, child: int = nostream, right: int = nostream,
              start: int = end, size: int = 0) -> bytes:
        raw = name.encode("utf-16-le") + b"\x00\x00" if name else b""
        return (raw.ljust(64, b"\x00") + struct.pack("<HBB3I", len(raw), kind, 1, nostream, right, child)
                + b"\x00" * 16 + b"\x00" * 4 + b"\x00" * 16 + struct.pack("<IQ", start, size))

    directory = b"".join([
        entry("Root Entry", 5, child=1),
        entry("VBA", 1, child=2, right=4),
        entry("dir", 2, right=3, start=first[0], size=4096),
        entry("_VBA_PROJECT", 2, start=first[1], size=4096),
        entry("PROJECT", 2, start=first[2], size=4096),
    ]) + b"".join(entry("", 0) for _ in range(3))
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 16
              + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\x00" * 6
              + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, end, 0, end, 0)
              + struct.pack("<I", 0) + struct.pack("<I", free) * 108)
    assert len(header) == 512 and len(directory) == 1024
    return header + struct.pack("<128I", *fat) + directory + b"".join(streams)
