"""The hostile corpus, generated in the test run (nothing binary is committed): bombs, huge and
deep MIME, broken encodings and charsets, hostile file names, malformed PDF and OLE files."""

from __future__ import annotations

import base64
import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable

CRLF = b"\r\n"
HEAD = (b"From: Sender <sender@sender.example>\r\nTo: alice@example.test\r\n"
        b"Message-ID: <hostile@sender.example>\r\nDate: Fri, 27 Nov 2026 21:00:00 +0000\r\n")


def with_attachment(data: bytes, filename_param: bytes, ctype: bytes = b"application/octet-stream",
                    encoding: bytes = b"base64", subject: bytes = b"hostile", encode: bool = True) -> bytes:
    """A message with a text body and one attachment; the filename parameter is raw header bytes.
    `encode=False` puts `data` in as it is, under whatever encoding is declared."""
    body = base64.encodebytes(data).replace(b"\n", CRLF) if encode and encoding == b"base64" else data
    return (HEAD + b"Subject: " + subject + b"\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
            b"--B\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nsee attached\r\n"
            b"--B\r\nContent-Type: " + ctype + b"\r\nContent-Disposition: attachment; " + filename_param
            + b"\r\nContent-Transfer-Encoding: " + encoding + b"\r\n\r\n" + body + b"\r\n--B--\r\n")


def named(data: bytes, name: str, ctype: bytes = b"application/octet-stream") -> bytes:
    return with_attachment(data, b'filename="' + name.encode() + b'"', ctype)


# --- archives ------------------------------------------------------------------------------

def zip_bomb(expanded_mb: int = 300) -> bytes:
    """One member of zeros: a few hundred KB that expands past the expanded-bytes bound."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, \
            zf.open("zeros.txt", "w", force_zip64=True) as out:
        chunk = bytes(1024 * 1024)
        for _ in range(expanded_mb):
            out.write(chunk)
    return buf.getvalue()


def nested_zip(levels: int = 8) -> bytes:
    """A zip in a zip in a zip …, deeper than archive_max_depth, with an .exe at the bottom."""
    data = _zip({"payload.exe": b"MZ" + bytes(200)})
    for level in range(levels):
        data = _zip({f"level{level}.zip": data})
    return data


def wide_nested_zip(width: int = 10, levels: int = 3, leaf_mb: int = 8) -> bytes:
    """42.zip in miniature: every level holds `width` copies of the level below."""
    data = _zip({"leaf.bin": bytes(leaf_mb * 1024 * 1024)})
    for level in range(levels):
        data = _zip({f"l{level}-{i}.zip": data for i in range(width)})
    return data


def gzip_bomb(expanded_mb: int = 300) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        chunk = bytes(1024 * 1024)
        for _ in range(expanded_mb):
            gz.write(chunk)
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def raw_name_zip(members: list[tuple[bytes, bytes]], utf8_flag: bool = False) -> bytes:
    """A stored zip whose member names are the given raw bytes (zipfile would re-encode them:
    CP932 names with 0x5C trail bytes must reach the reader as Windows wrote them)."""
    local, central = io.BytesIO(), io.BytesIO()
    flags = 0x800 if utf8_flag else 0
    for name, data in members:
        offset = local.tell()
        crc = zlib.crc32(data)
        local.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, 0, 0x21, crc,
                                len(data), len(data), len(name), 0) + name + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, 0, 0, 0x21,
                                  crc, len(data), len(data), len(name), 0, 0, 0, 0, 0, offset) + name)
    cd = central.getvalue()
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cd),
                      local.tell(), 0)
    return local.getvalue() + cd + end


# Shift_JIS / CP932 characters whose second byte is 0x5C, the ASCII backslash.
CP932_5C = "表ソ十能予"


def cp932_zip() -> bytes:
    names = [f"{CP932_5C}.exe", "ソフト\\表計算.xlsm", "請求書.pdf.exe"]
    return raw_name_zip([(n.encode("cp932"), b"MZ" + bytes(100)) for n in names])


def traversal_zip() -> bytes:
    return raw_name_zip([(b"../../../../etc/cron.d/evil", b"* * * * * root sh\n"),
                         (b"C:\\Windows\\System32\\evil.dll", b"MZ" + bytes(64)),
                         (b"/absolute/path.exe", b"MZ" + bytes(64)),
                         (("a" * 5000 + ".exe").encode(), b"MZ" + bytes(64))])


def rtl_zip() -> bytes:
    return _zip({"invoice\u202egpj.exe": b"MZ" + bytes(64), "report\u202excod.scr": b"MZ"})


# --- MIME structure ------------------------------------------------------------------------

def many_parts(count: int = 100_000) -> bytes:
    part = b"--P\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return (HEAD + b"Subject: many parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=P\r\n\r\n" + part * count + b"--P--\r\n")


def deep_nesting(depth: int = 1000) -> bytes:
    head = HEAD + b"Subject: deep\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    body = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
                    for i in range(1, depth))
    leaf = b"--b%d\r\nContent-Type: application/octet-stream; name=x.exe\r\n\r\nMZ\r\n" % (depth - 1)
    tail = b"".join(b"--b%d--\r\n" % i for i in range(depth - 1, -1, -1))
    return head + body + leaf + tail


def deep_rfc822(depth: int = 300) -> bytes:
    """Attached message inside attached message …"""
    inner = HEAD + b"Subject: leaf\r\nContent-Type: text/plain\r\n\r\nleaf\r\n"
    for i in range(depth):
        inner = (HEAD + b"Subject: wrap %d\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n"
                 b"Content-Disposition: attachment; filename=\"m%d.eml\"\r\n\r\n" % (i, i)) + inner
    return inner


def huge_header_line(mb: int = 10) -> bytes:
    return (HEAD + b"Subject: " + b"A" * (mb * 1024 * 1024) + b"\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain\r\n\r\nbody\r\n")


def many_headers(count: int = 200_000) -> bytes:
    return HEAD + b"".join(b"X-H%d: v\r\n" % i for i in range(count)) + b"Subject: h\r\n\r\nbody\r\n"


def huge_folded_header(mb: int = 5) -> bytes:
    line = b"\r\n word" * (mb * 1024 * 1024 // 7)
    return HEAD + b"Subject: s" + line + b"\r\nContent-Type: text/plain\r\n\r\nbody\r\n"


def nuls() -> bytes:
    return (b"From: a\x00b@sender.example\r\nTo: alice@example.test\r\nSubject: nul\x00s\x00\r\n"
            b"X-Nul: \x00\x00\x00\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"N\x00\"\r\n\r\n"
            b"--N\x00\r\nContent-Type: text/plain\r\n\r\nbody\x00with\x00nuls\r\n"
            b"--N\x00\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"a\x00.exe\"\r\n\r\n\x00\x00MZ\r\n--N\x00--\r\n")


def no_boundary() -> bytes:
    return (HEAD + b"Subject: nb\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n"
            b"--X\r\nContent-Type: text/plain\r\n\r\nx\r\n--X--\r\n")


def unterminated() -> bytes:
    return (HEAD + b"Subject: un\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=U\r\n\r\n"
            b"--U\r\nContent-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(_zip({"a.exe": b"MZ"}))[:40])


# --- encodings and charsets ----------------------------------------------------------------

def invalid_base64() -> bytes:
    return with_attachment(b"!!!!not*base64$$$\r\nQUJD=RE\r\n====\r\nA\r\n\xff\xfe\r\n", b'filename="a.bin"',
                           encoding=b"base64", encode=False)


def invalid_qp() -> bytes:
    return (HEAD + b"Subject: qp\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"<a href=3D\"http://evil.example/=ZZ=\r\n=0\r\n=\r\n=E3=81\">x</a>=GG=\xff=" + b"=" * 5000 + b"\r\n")


def unknown_encoding() -> bytes:
    return (HEAD + b"Subject: enc\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: x-uuencode-bogus\r\n\r\nbegin 644 a.exe\r\nM\r\n")


def undeclared_charset() -> bytes:
    text = "請求書をご確認ください。http://evil.example/login".encode("cp932")
    return (HEAD + "Subject: 請求書".encode("cp932") + b"\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text + b"\r\n")


def wrong_charset() -> bytes:
    text = "ご確認ください http://evil.example/".encode("iso-2022-jp")
    return (HEAD + b"Subject: =?utf-8?B?" + base64.b64encode("表示".encode("cp932")) + b"?=\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=W\r\n\r\n"
            b"--W\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + b"\r\n"
            b"--W\r\nContent-Type: text/html; charset=x-no-such-charset\r\n\r\n<p>\xe3\x81\x82\xff</p>"
            b"<a href=\"http://evil.example/\">x</a>\r\n--W--\r\n")


def bogus_encoded_words() -> bytes:
    return (HEAD + b"Subject: =?x-nope?Q?abc?= =?utf-8?B?!!!?= =?iso-2022-jp?B?GyRCJCIbKEI?=\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream; "
            b"name=\"=?utf-8?B?" + base64.b64encode("請求書\u202egpj.exe".encode()) + b"?=\"\r\n"
            b"Content-Disposition: attachment; filename*=x-bogus''%FF%FE%00.exe\r\n\r\nMZ\r\n")


# --- file names ----------------------------------------------------------------------------

def cp932_raw_filename() -> bytes:
    return with_attachment(b"MZ" + bytes(100), b'filename="' + "表ソ十.exe".encode("cp932") + b'"')


def cp932_5c_before_quote() -> bytes:
    """The trail byte 0x5C right before the closing quote looks like an escaped quote."""
    return with_attachment(b"MZ" + bytes(100), b'filename="' + "実行ソ".encode("cp932") + b'"; size=102')


def overlong_filename() -> bytes:
    return with_attachment(b"MZ" + bytes(100), b'filename="' + b"a" * 100_000 + b'.exe"')


def rfc2231_many_continuations(count: int = 5000) -> bytes:
    params = b"; ".join(b"filename*%d=\"a%d\"" % (i, i) for i in range(count))
    return with_attachment(b"MZ" + bytes(100), params + b"; filename*" + str(count).encode() + b"=\".exe\"")


def traversal_filename() -> bytes:
    return with_attachment(b"MZ" + bytes(100), b'filename="../../../../../etc/passwd\\..\\evil.exe"')


def rtl_filename() -> bytes:
    name = "invoice\u202egpj.exe"
    return with_attachment(b"MZ" + bytes(100),
                           b"filename*=utf-8''" + "".join(f"%{b:02X}" for b in name.encode()).encode())


# --- malformed documents -------------------------------------------------------------------

def pdf_truncated() -> bytes:
    return named(b"%PDF-1.7\n1 0 obj << /Type /Catalog /OpenAction << /S /JavaScript /JS (app.alert(1)", "a.pdf",
                 b"application/pdf")


def pdf_garbage_xref() -> bytes:
    body = (b"%PDF-1.4\n1 0 obj <</Type/Catalog/Pages 2 0 R/Names <</JavaScript 3 0 R>>>> endobj\n"
            b"2 0 obj <</Type/Pages/Kids [2 0 R]/Count 99999999>> endobj\n"
            b"3 0 obj <</Names [(a) 3 0 R]>> endobj\n"
            b"4 0 obj <</Length 99999999/Filter [/FlateDecode /FlateDecode /ASCIIHexDecode]>>stream\n"
            + b"\xff" * 1000 + b"\nendstream endobj\nxref\n0 99999999\nGARBAGE\ntrailer <</Root 1 0 R"
            b"/Size -5/Encrypt 9 0 R>>\nstartxref\n-1\n%%EOF\n")
    return named(body, "bad.pdf", b"application/pdf")


def pdf_deep_dicts(depth: int = 100_000) -> bytes:
    body = b"%PDF-1.4\n1 0 obj " + b"<</A " * depth + b">>" * depth + b" endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
    return named(body, "deep.pdf", b"application/pdf")


def pdf_many_objects(count: int = 200_000) -> bytes:
    objs = b"".join(b"%d 0 obj <</JS (x)>> endobj\n" % i for i in range(1, count))
    return named(b"%PDF-1.4\n" + objs + b"trailer <</Root 1 0 R>>\n%%EOF\n", "many.pdf", b"application/pdf")


OLE_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")


def ole_garbage() -> bytes:
    return named(OLE_MAGIC + b"\xff" * 4096, "a.doc", b"application/msword")


def ole_fat_loop() -> bytes:
    """A compound-file header whose FAT chains point at themselves (and a huge sector count)."""
    header = bytearray(512)
    header[0:8] = OLE_MAGIC
    struct.pack_into("<HHHH", header, 24, 0x3E, 3, 0xFFFE, 9)  # minor, major, byte order, 512-byte sectors
    struct.pack_into("<H", header, 32, 6)
    struct.pack_into("<IIIIIII", header, 44, 0x7FFFFFFF, 0, 0, 0x1000, 0, 0, 0)  # FAT sectors, dir start 0
    struct.pack_into("<I", header, 76, 0)  # DIFAT[0] = sector 0
    for i in range(1, 109):
        struct.pack_into("<I", header, 76 + i * 4, 0)
    sector = struct.pack("<I", 0) * 128  # every FAT entry points at sector 0: a cycle
    return named(bytes(header) + sector * 8, "loop.xls", b"application/vnd.ms-excel")


def ole_as_docx() -> bytes:
    return named(OLE_MAGIC + bytes(504) + b"\x00" * 2048, "encrypted.docx",
                 b"application/vnd.openxmlformats-officedocument.wordprocessingml.document")


def corrupt_ooxml() -> bytes:
    data = _zip({"[Content_Types].xml": b"<Types" * 10_000, "word/document.xml": b"<?xml " + b"<a>" * 50_000,
                 "word/vbaProject.bin": OLE_MAGIC + b"\x00" * 100})
    return named(data, "doc.docm",
                 b"application/vnd.ms-word.document.macroEnabled.12")


# name → (builder, symbols of which at least one must be among the findings (empty: any finding))
CASES: dict[str, tuple[Callable[[], bytes], set[str]]] = {
    "zip-bomb": (lambda: named(zip_bomb(), "bomb.zip", b"application/zip"), {"ARCHIVE_LIMIT"}),
    "nested-zip": (lambda: named(nested_zip(), "nested.zip", b"application/zip"), {"ARCHIVE_LIMIT"}),
    "wide-nested-zip": (lambda: named(wide_nested_zip(), "42.zip", b"application/zip"), {"ARCHIVE_LIMIT"}),
    "gzip-bomb": (lambda: named(gzip_bomb(), "bomb.txt.gz", b"application/gzip"), {"ARCHIVE_LIMIT"}),
    "100k-parts": (many_parts, {"MIME_LIMIT"}),
    "400k-parts": (lambda: many_parts(400_000), {"MIME_LIMIT"}),
    "depth-1000": (deep_nesting, {"MIME_LIMIT", "MIME_PARSE_FAILED"}),
    "rfc822-depth-300": (deep_rfc822, {"MIME_LIMIT", "MIME_PARSE_FAILED"}),
    "10mb-header-line": (huge_header_line, {"HEADER_LIMIT"}),
    "200k-headers": (many_headers, {"HEADER_LIMIT"}),
    "5mb-folded-header": (huge_folded_header, {"HEADER_LIMIT"}),
    "nuls": (nuls, set()),
    "no-boundary": (no_boundary, set()),
    "unterminated": (unterminated, set()),
    "invalid-base64": (invalid_base64, {"INVALID_ENCODING"}),
    "invalid-qp": (invalid_qp, set()),
    "unknown-cte": (unknown_encoding, set()),
    "undeclared-charset": (undeclared_charset, set()),
    "wrong-charset": (wrong_charset, set()),
    "bogus-encoded-words": (bogus_encoded_words, set()),
    "cp932-zip-names": (lambda: named(cp932_zip(), "sjis.zip", b"application/zip"), {"DANGEROUS_EXTENSION"}),
    "cp932-raw-filename": (cp932_raw_filename, {"DANGEROUS_EXTENSION"}),
    "cp932-5c-before-quote": (cp932_5c_before_quote, set()),
    "overlong-filename": (overlong_filename, set()),
    "rfc2231-5000-continuations": (rfc2231_many_continuations, set()),
    "traversal-filename": (traversal_filename, {"DANGEROUS_EXTENSION"}),
    "traversal-zip": (lambda: named(traversal_zip(), "t.zip", b"application/zip"), {"PATH_TRAVERSAL"}),
    "rtl-filename": (rtl_filename, set()),
    "rtl-zip": (lambda: named(rtl_zip(), "rtl.zip", b"application/zip"), {"DANGEROUS_EXTENSION"}),
    "pdf-truncated": (pdf_truncated, set()),
    "pdf-garbage-xref": (pdf_garbage_xref, set()),
    "pdf-deep-dicts": (pdf_deep_dicts, set()),
    "pdf-200k-objects": (pdf_many_objects, set()),
    "ole-garbage": (ole_garbage, set()),
    "ole-fat-loop": (ole_fat_loop, set()),
    "ole-named-docx": (ole_as_docx, set()),
    "corrupt-ooxml": (corrupt_ooxml, set()),
}
