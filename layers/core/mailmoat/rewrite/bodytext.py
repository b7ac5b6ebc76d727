"""Read and write the text of one MIME leaf part, keeping its charset whenever it can."""

from __future__ import annotations

import base64
import codecs
import quopri
import re
from email.message import Message
from functools import cache

from mailmoat.charsets import codec_for, decode_bytes, jis_cell_of_standin

# Codecs whose encoded pieces cannot simply be glued together (BOMs, byte order).
_NOT_CONCATENABLE = frozenset({"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
                               "utf-32-be", "utf-8-sig"})
_NEWLINES = re.compile(rb"\r\n|\r|\n")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_MAX_LINE = 998  # RFC 5322 hard limit for 7bit/8bit bodies


def payload_bytes(node: Message) -> bytes:
    """The decoded body of a leaf part; broken transfer encodings give what could be read."""
    try:
        data = node.get_payload(decode=True)
    except Exception:  # a hostile encoding must not escape as an exception
        return b""
    return data if isinstance(data, bytes) else b""


def declared_charset(node: Message) -> str | None:
    value = node.get_param("charset")
    return value.strip() if isinstance(value, str) and value.strip() else None


def read_text(node: Message) -> str:
    """The part's text in its declared charset, with the Japanese-aware fallbacks of charsets.py."""
    return decode_bytes(payload_bytes(node), declared_charset(node))


@cache
def _nec_selected_ibm() -> dict[str, bytes]:
    # CP932 encodes IBM extension characters (ⅰ, 髙 …) in rows 0xFA-0xFC, which have no
    # JIS X 0208 position; Windows' CP50220 writes the NEC-selected copies (0xED/0xEE) instead.
    table: dict[str, bytes] = {}
    for lead in (0xED, 0xEE):
        for trail in range(0x40, 0xFD):
            if trail == 0x7F:
                continue
            try:
                ch = bytes((lead, trail)).decode("cp932")
            except UnicodeDecodeError:
                continue
            table.setdefault(ch, bytes((lead, trail)))
    return table


def _sjis_to_jis(s1: int, s2: int) -> tuple[int, int]:
    if s1 >= 0xE0:
        s1 -= 0x40
    j1 = (s1 - 0x81) * 2 + 0x21
    if s2 >= 0x9F:
        return j1 + 1, s2 - 0x7E
    return j1, s2 - 0x1F - (1 if s2 >= 0x80 else 0)


_RUNS = re.compile(r"[\x00-\x7f]+|[^\x00-\x7f]+")


@cache
def _jis_pair(ch: str) -> bytes | None:
    """The JIS X 0208 (NEC rows included) code of one character, or None."""
    if ch >= "\U000f0000":  # a JIS cell CP932 could not read (an au pictograph): as it came
        return jis_cell_of_standin(ch)
    try:
        sjis = ch.encode("cp932")
    except UnicodeEncodeError:
        return None
    if len(sjis) == 2 and sjis[0] >= 0xF0:
        sjis = _nec_selected_ibm().get(ch, sjis)
    if len(sjis) != 2 or not (0x81 <= sjis[0] <= 0x9F or 0xE0 <= sjis[0] <= 0xEF):
        return None
    return bytes(_sjis_to_jis(sjis[0], sjis[1]))


def _jis_run(chunk: str, text: str, start: int) -> bytes:
    pairs = []
    for offset, ch in enumerate(chunk):
        pair = _jis_pair(ch)
        if pair is None:
            raise UnicodeEncodeError("iso-2022-jp", text, start + offset, start + offset + 1,
                                     "not in JIS X 0208")
        pairs.append(pair)
    return b"\x1b$B" + b"".join(pairs) + b"\x1b(B"


def encode_iso2022jp(text: str) -> bytes:
    """ISO-2022-JP the way Windows writes it (CP50220): NEC special characters (①, ㈱) are kept,
    which Python's strict iso2022_jp refuses. The inverse of charsets.decode_iso2022jp.

    Raises UnicodeEncodeError for what JIS X 0208 + NEC rows cannot hold (half-width
    katakana, emoji …); the caller then re-encodes the part as UTF-8.
    """
    if any(ch in text for ch in "\x0e\x0f\x1b"):  # would switch the reader's state
        raise UnicodeEncodeError("iso-2022-jp", text, 0, len(text), "control character")
    out = bytearray()
    for run in _RUNS.finditer(text):
        chunk = run.group()
        if chunk[0] < "\x80":
            out += chunk.encode("ascii")
            continue
        try:
            # The C codec for the common case; it writes only ESC $ B and ESC ( B here, and
            # what it writes decodes to the same characters through CP932.
            encoded = chunk.encode("iso2022_jp")
        except UnicodeEncodeError:
            encoded = _jis_run(chunk, text, run.start())
        if b"\x1b(J" in encoded:  # ¥ or ‾ via JIS X 0201 Roman, which reads back as ASCII
            encoded = _jis_run(chunk, text, run.start())
        out += encoded
    return bytes(out)


def _encoder(charset: str | None) -> str | None:
    """The codec to write a declared charset with. Stricter than reading: charsets.py reads
    "gb2312" as GB18030 and "euc-jp" as EUC-JIS-2004 to be lenient, but bytes written under
    the old label must be what an old reader expects. Shift_JIS is the exception: every
    client reads it as CP932, the NEC characters Japanese users type included."""
    codec = codec_for(charset)
    if codec in (None, "iso-2022-jp", "cp932") or charset is None:
        return codec
    try:
        return codecs.lookup(charset.strip().strip('"').lower()).name
    except LookupError:
        return None


def can_write(charset: str | None) -> bool:
    """Whether text can be written back under this charset label at all."""
    codec = _encoder(charset)
    return bool(codec) and codec not in _NOT_CONCATENABLE


def _encode_with(codec: str, text: str) -> bytes:
    return encode_iso2022jp(text) if codec == "iso-2022-jp" else text.encode(codec)


@cache
def _encodable(codec: str, ch: str) -> bool:
    try:
        _encode_with(codec, ch)
    except UnicodeEncodeError:
        return False
    return True


def encode_text(text: str, charset: str | None, *, html: bool = False) -> tuple[bytes, str]:
    """Encode in the part's charset when it holds every character, otherwise as UTF-8.
    HTML keeps its charset in any case: a character the charset lacks (lxml turns &nbsp;
    into U+00A0, which Shift_JIS has no place for) is written as a character reference.
    Returns the bytes and the charset label to declare."""
    codec = _encoder(charset)
    if codec and charset and codec not in _NOT_CONCATENABLE:
        try:
            return _encode_with(codec, text), charset
        except UnicodeEncodeError:
            if html:
                escaped = _NON_ASCII.sub(
                    lambda m: m.group() if _encodable(codec, m.group()) else f"&#{ord(m.group())};",
                    text)
                return _encode_with(codec, escaped), charset
    elif charset is None and text.isascii():
        return text.encode("ascii"), "us-ascii"
    return text.encode("utf-8"), "utf-8"


def encode_prefix(prefix: str, charset: str | None) -> bytes | None:
    """`prefix` in the part's charset such that it can be put in front of the existing bytes
    unchanged, or None when the charset cannot hold it (or is not safely concatenable)."""
    codec = _encoder(charset)
    if not codec or not charset or codec in _NOT_CONCATENABLE:
        return None
    try:
        if codec == "iso-2022-jp":
            return encode_iso2022jp(prefix)  # always ends back in ASCII mode
        return prefix.encode(codec)
    except UnicodeEncodeError:
        return None


def newline_of(data: bytes) -> str:
    return "\r\n" if b"\r\n" in data[:4096] else "\n"


def _transfer_encoding(data: bytes, original: str) -> str:
    if original in ("base64", "quoted-printable"):
        return original  # the sender's choice still fits; keeps the part looking as it did
    longest = max((len(line) for line in _NEWLINES.split(data)), default=0)
    if longest > _MAX_LINE:
        return "base64"
    if data.isascii():
        return "7bit"
    return "8bit" if original == "8bit" else "base64"


def write_bytes(node: Message, data: bytes, charset: str) -> None:
    """Replace the part's body by `data` (already in `charset`), choosing a transfer encoding
    that can carry it. Other headers of the part are left as they were."""
    original = str(node.get("content-transfer-encoding", "7bit")).strip().lower()
    cte = _transfer_encoding(data, original)
    if cte == "base64":
        # Text is canonically CRLF inside base64 (RFC 2045 §6.8).
        canonical = _NEWLINES.sub(b"\r\n", data)
        payload = base64.encodebytes(canonical).decode("ascii")
    elif cte == "quoted-printable":
        payload = quopri.encodestring(_NEWLINES.sub(b"\n", data)).decode("ascii")
    else:
        # The generator writes these lines with the output's line separator; raw 8-bit
        # bytes ride as surrogate escapes, which BytesGenerator writes back unchanged.
        payload = _NEWLINES.sub(b"\n", data).decode("ascii", "surrogateescape")
    node.set_payload(payload)
    if "content-transfer-encoding" in node:
        node.replace_header("Content-Transfer-Encoding", cte)
    else:
        node["Content-Transfer-Encoding"] = cte
    if declared_charset(node) != charset:
        node.set_param("charset", charset)


def write_text(node: Message, text: str) -> str:
    """Encode `text` for the part (its charset if possible, else UTF-8) and store it.
    Returns the charset used."""
    data, charset = encode_text(text, declared_charset(node))
    write_bytes(node, data, charset)
    return charset


def prepend_text(node: Message, prefix: str) -> str:
    """Put `prefix` before the part's text. The existing bytes are kept as they are when the
    charset can encode the prefix (so characters a strict codec would refuse survive);
    otherwise the whole part is decoded and re-encoded. Returns the charset used."""
    original = payload_bytes(node)
    charset = declared_charset(node)
    prefix = prefix.replace("\n", newline_of(original))
    encoded = encode_prefix(prefix, charset)
    if encoded is not None and charset is not None:
        write_bytes(node, encoded + original, charset)
        return charset
    return write_text(node, prefix + decode_bytes(original, charset))
