"""Generates the benchmark corpus: a deterministic mix of the mail a Japanese company receives."""

from __future__ import annotations

import io
import random
import sys
import zipfile
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fixtures.make_fixtures import minimal_pdf  # one PDF writer for fixtures and bench

WORDS = ("invoice", "quarterly", "meeting", "schedule", "report", "figures", "attached", "please",
         "review", "regards", "project", "deadline", "budget", "proposal", "contract", "shipment",
         "order")
JP = "お世話になっております。請求書を送付いたします。ご確認のほどよろしくお願いいたします。"


def _base(rng: random.Random, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Return-Path"] = "<sender@sender.example>"
    msg["Received"] = ("from mail.sender.example (mail.sender.example [203.0.113.5]) by "
                       "mx.example.test (mailmoat) with ESMTP id BENCH; "
                       + format_datetime(datetime(2026, 11, 27, tzinfo=UTC)))
    msg["From"] = "Sender <sender@sender.example>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 11, 27, tzinfo=UTC))
    msg["Message-ID"] = make_msgid(idstring=str(rng.random())[2:10], domain="sender.example")
    return msg


def _text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(12))
        if rng.random() < 0.1:
            line += " https://portal.sender.example/doc/" + str(rng.randint(1, 10**6))
        out.append(line)
        n += len(line) + 1
    return "\n".join(out) + "\n"


def plain(rng: random.Random, size: int = 20_000) -> bytes:
    msg = _base(rng, "Quarterly figures")
    msg.set_content(_text(rng, size))
    return msg.as_bytes()


def html_newsletter(rng: random.Random) -> bytes:
    msg = _base(rng, "Newsletter")
    text = _text(rng, 4000)
    links = "".join(f'<p><a href="https://news.sender.example/a/{i}">Article {i}</a> {w}</p>'
                    for i, w in enumerate(text.split("\n")[:40]))
    msg.set_content(text)
    msg.add_alternative(f"<html><body><h1>News</h1>{links}</body></html>", subtype="html")
    return msg.as_bytes()


def japanese(rng: random.Random, charset: str) -> bytes:
    msg = _base(rng, "①請求書送付のご案内")
    body = (JP + "\n") * 30
    msg.set_content(body.replace("①", "1"), charset="iso-2022-jp" if charset == "jis" else "shift_jis",
                    cte="7bit" if charset == "jis" else "base64")
    return msg.as_bytes()


def _ooxml(kind: str, rng: random.Random, size: int) -> bytes:
    buf = io.BytesIO()
    main = {"docx": ("word/document.xml", "application/vnd.openxmlformats-officedocument."
                     "wordprocessingml.document.main+xml"),
            "xlsx": ("xl/workbook.xml", "application/vnd.openxmlformats-officedocument."
                     "spreadsheetml.sheet.main+xml")}[kind]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/'
                   '2006/content-types"><Default Extension="xml" ContentType="application/xml"/>'
                   f'<Override PartName="/{main[0]}" ContentType="{main[1]}"/></Types>')
        z.writestr("_rels/.rels",
                   '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
                   'openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
                   f'Target="{main[0]}"/></Relationships>')
        z.writestr(main[0], "<?xml version=\"1.0\"?><doc>" + _text(rng, size) + "</doc>")
    return buf.getvalue()


def docx_1mb(rng: random.Random) -> bytes:
    """A clean ~1 MB .docx (text plus an incompressible embedded picture), as an email."""
    buf = io.BytesIO(_ooxml("docx", rng, 50_000))
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as z:
        z.writestr("word/media/image1.png", rng.randbytes(950_000))
    return with_attachment(rng, "提案書.docx", buf.getvalue(), "application",
                           "vnd.openxmlformats-officedocument.wordprocessingml.document")


def _pdf(rng: random.Random) -> bytes:
    return minimal_pdf(" ".join(rng.choice(WORDS) for _ in range(50)))


def with_attachment(rng: random.Random, filename: str, data: bytes, maintype: str,
                    subtype: str) -> bytes:
    msg = _base(rng, f"File: {filename}")
    msg.set_content(_text(rng, 1500))
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def zip_bytes(rng: random.Random, password: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    if password:
        import pyzipper

        with pyzipper.AESZipFile(buf, "w", compression=pyzipper.ZIP_DEFLATED,
                                 encryption=pyzipper.WZ_AES) as z:
            z.setpassword(password)
            z.writestr("見積書.txt", _text(rng, 3000))
    else:
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("report.txt", _text(rng, 3000))
            z.writestr("data.csv", "a,b\n" * 200)
    return buf.getvalue()


def inline_image(rng: random.Random) -> bytes:
    msg = _base(rng, "Inline logo")
    msg.set_content("see html")
    msg.add_alternative('<html><body><img src="cid:logo"><p>Hello</p></body></html>', subtype="html")
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6300010000050001a5f645400000000049454e44ae426082")
    html = msg.get_payload()[1]
    html.add_related(png, maintype="image", subtype="png", cid="<logo>")
    return msg.as_bytes()


def large(rng: random.Random, size: int = 25 * 1024 * 1024) -> bytes:
    """A 25 MB zip attachment of incompressible data (DESIGN §10 large-message target)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("backup.bin", rng.randbytes(size))
    return with_attachment(rng, "backup.zip", buf.getvalue(), "application", "zip")


def mixed(seed: int = 7, copies: int = 10) -> list[tuple[str, bytes]]:
    """(kind, raw) pairs: each kind `copies` times, in a shuffled, repeatable order."""
    rng = random.Random(seed)
    makers = {
        "plain": lambda: plain(rng),
        "html": lambda: html_newsletter(rng),
        "iso-2022-jp": lambda: japanese(rng, "jis"),
        "shift_jis": lambda: japanese(rng, "sjis"),
        "docx": lambda: with_attachment(rng, "report.docx", _ooxml("docx", rng, 20_000),
                                        "application", "vnd.openxmlformats-officedocument."
                                        "wordprocessingml.document"),
        "xlsx": lambda: with_attachment(rng, "figures.xlsx", _ooxml("xlsx", rng, 20_000),
                                        "application", "vnd.openxmlformats-officedocument."
                                        "spreadsheetml.sheet"),
        "pdf": lambda: with_attachment(rng, "brochure.pdf", _pdf(rng), "application", "pdf"),
        "zip": lambda: with_attachment(rng, "files.zip", zip_bytes(rng), "application", "zip"),
        "zip-aes": lambda: with_attachment(rng, "請求書.zip", zip_bytes(rng, b"pw"), "application",
                                           "zip"),
        "inline-image": lambda: inline_image(rng),
    }
    items = [(kind, make()) for _ in range(copies) for kind, make in makers.items()]
    rng.shuffle(items)
    return items
