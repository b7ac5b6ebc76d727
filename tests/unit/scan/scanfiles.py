"""Builders for scan tests: every file is made in the test, never committed as a binary."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage
from typing import Any


def eml(*files: tuple[str | None, bytes] | tuple[str | None, bytes, str]) -> bytes:
    """A message with a text body and the given files attached (Content-Disposition: attachment)."""
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "files"
    msg["Message-ID"] = "<scan-test@example.com>"
    msg.set_content("see attached\n")
    for item in files:
        name, data = item[0], item[1]
        ctype = item[2] if len(item) > 2 else "application/octet-stream"  # type: ignore[misc]
        maintype, subtype = ctype.split("/", 1)
        if name is None:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, disposition="attachment")
        else:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


_CT = {
    "word": ("word/document.xml",
             "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"),
    "word-macro": ("word/document.xml", "application/vnd.ms-word.document.macroEnabled.main+xml"),
    "excel": ("xl/workbook.xml",
              "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"),
    "excel-macro": ("xl/workbook.xml", "application/vnd.ms-excel.sheet.macroEnabled.main+xml"),
}

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PR = "http://schemas.openxmlformats.org/package/2006/relationships"


def make_ooxml(kind: str = "word", *, body: str = "<w:p><w:r><w:t>Hello</w:t></w:r></w:p>",
               extra: dict[str, bytes] | None = None, padding: int = 0) -> bytes:
    """A minimal but well-formed docx/docm/xlsx/xlsm built with zipfile."""
    main, ctype = _CT[kind]
    types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/{main}" ContentType="{ctype}"/>'
        "</Types>")
    rels = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{PR}">'
            f'<Relationship Id="rId1" Type="{R}/officeDocument" Target="{main}"/></Relationships>')
    if kind.startswith("word"):
        doc = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
               f'<w:document xmlns:w="{W}"><w:body>{body}</w:body></w:document>')
    else:
        doc = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
               '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
               '<sheets/></workbook>')
    members = {"[Content_Types].xml": types.encode(), "_rels/.rels": rels.encode(),
               main: doc.encode()}
    if padding:
        # Incompressible bytes in a media part make a realistic-size document.
        import os

        members["word/media/image1.png"] = os.urandom(padding)
    members.update(extra or {})
    return make_zip(members)


def encrypt_ooxml(plain: bytes, password: str) -> bytes:
    # msoffcrypto-tool 6.1 writes packages under 4 KiB that it cannot decrypt again: pad.
    assert len(plain) >= 4096, "pad the document (make_ooxml(padding=...))"
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt(password, out)
    return out.getvalue()


def only(report: dict[str, Any]) -> dict[str, Any]:
    assert len(report["attachments"]) == 1, report["attachments"]
    return report["attachments"][0]  # type: ignore[no-any-return]


# --- formats nothing installable here can write: minimal stored-only writers for tests -----------

def _crc16_arc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def make_lzh(members: dict[bytes, bytes]) -> bytes:
    """LHA level-0 headers, method -lh0- (stored); names as raw bytes (Japanese tools: CP932)."""
    import struct

    out = bytearray()
    for name, data in members.items():
        body = (b"-lh0-" + struct.pack("<IIIBB", len(data), len(data), 0x5A2E0000, 0x20, 0)
                + bytes([len(name)]) + name + struct.pack("<H", _crc16_arc(data)))
        out += bytes([len(body), sum(body) & 0xFF]) + body + data
    out += b"\0"
    return bytes(out)


def make_rar4(members: dict[str, bytes], *, encrypted: bool = False) -> bytes:
    """RAR 4 with stored members (method 0x30); `encrypted` sets the password flag per file,
    which is what readers see of a password-protected RAR before decrypting."""
    import struct
    import zlib

    def block(head_type: int, flags: int, rest: bytes) -> bytes:
        head = struct.pack("<BHH", head_type, flags, 7 + len(rest)) + rest
        return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head

    out = bytearray(b"Rar!\x1a\x07\x00")
    out += block(0x73, 0, b"\0" * 6)
    for name, data in members.items():
        raw_name = name.encode()
        flags = 0x8000 | (0x04 if encrypted else 0)
        rest = struct.pack("<IIBIIBBHI", len(data), len(data), 2, zlib.crc32(data),
                           0x5A2E0000, 20, 0x30, len(raw_name), 0x20) + raw_name
        out += block(0x74, flags, rest) + data
    out += block(0x7B, 0x4000, b"")
    return bytes(out)
