"""Builders for rewrite tests: raw messages in Japanese mail charsets, and output readers."""

from __future__ import annotations

import base64
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from mailmoat.charsets import decode_bytes
from mailmoat.rewrite.bodytext import encode_iso2022jp

CRLF = "\r\n"


def encode_body(text: str, charset: str) -> bytes:
    if charset.lower() == "iso-2022-jp":
        return encode_iso2022jp(text)  # CP50220 style, as Outlook writes NEC characters
    codec = {"shift_jis": "cp932"}.get(charset.lower(), charset)
    return text.encode(codec)


def leaf(ctype: str, text: str, charset: str = "utf-8", cte: str = "auto",
         extra: str = "") -> bytes:
    data = encode_body(text, charset).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if cte == "auto":
        cte = "7bit" if data.isascii() else "base64"
    if cte == "base64":
        data = base64.encodebytes(data).replace(b"\n", b"\r\n")
    head = f"Content-Type: {ctype}; charset={charset}{CRLF}Content-Transfer-Encoding: {cte}{CRLF}"
    return (head + extra).encode() + b"\r\n" + data


def multipart(subtype: str, *parts: bytes, boundary: str | None = None) -> bytes:
    boundary = boundary or f"b-{subtype}-{len(parts)}"
    out = f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n".encode()
    for part in parts:
        out += f"--{boundary}\r\n".encode() + part + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def message(entity: bytes, *, from_: str = "Taro Yamada <taro@example.com>",
            extra_headers: str = "") -> bytes:
    head = (f"From: {from_}{CRLF}To: alice@example.test{CRLF}Subject: test message{CRLF}"
            f"Date: Fri, 27 Nov 2026 10:00:00 +0900{CRLF}Message-ID: <m1@example.com>{CRLF}"
            f"{extra_headers}MIME-Version: 1.0{CRLF}")
    return head.encode() + entity


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def text_parts(data: bytes) -> list[tuple[str, str]]:
    """(content type, decoded text) of every text/plain and text/html part of the output."""
    out = []
    for part in parse(data).walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append((part.get_content_type(), decode_bytes(payload, part.get_content_charset())))
    return out


def public_txt(public_b64: str) -> bytes:
    return f"v=DKIM1; k=rsa; p={public_b64}".encode()


def no_clickable_url(text: str) -> bool:
    return re.search(r"(?i)(?:https?|ftp)://", text) is None
