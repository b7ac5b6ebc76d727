"""Decoding bytes in the charsets real mail uses, Japanese ones first-class; never raises."""

from __future__ import annotations

import codecs
import re
from functools import cache

# Names mail clients put in headers, mapped to the codec that decodes what they
# actually send: "Shift_JIS" mail is written by Windows (CP932, with NEC and IBM
# extensions), and "ISO-2022-JP" mail routinely carries the same extensions
# (Microsoft's CP50220 behaviour), which Python's strict iso2022_jp refuses.
_ALIASES = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "cp932": "cp932",
    "euc-jp": "euc_jis_2004",
    "x-euc-jp": "euc_jis_2004",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "big5": "big5hkscs",
    "us-ascii": "ascii",
    "unknown-8bit": "",
    "x-unknown": "",
}

ISO2022JP_NAMES = frozenset({"iso-2022-jp", "csiso2022jp", "iso-2022-jp-1", "iso-2022-jp-ms", "cp50220",
                             "cp50221", "cp50222"})

_ESC = 0x1B

# Python's iso2022_jp follows the JIS mapping; Windows (and so the senders) use CP932's for
# these seven code points. Mapping them makes the fast path identical to the CP932 route.
_JIS_TO_CP932 = str.maketrans({"\u301c": "\uff5e", "\u2016": "\u2225", "\u2212": "\uff0d",
                               "\u00a2": "\uffe0", "\u00a3": "\uffe1", "\u00ac": "\uffe2",
                               "\u2014": "\u2015"})


def codec_for(charset: str | None) -> str | None:
    """The Python codec for a MIME charset name, or None when unknown."""
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    if name in ISO2022JP_NAMES:
        return "iso-2022-jp"
    name = _ALIASES.get(name, name)
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _jis_pair_to_sjis(j1: int, j2: int) -> bytes:
    s1 = ((j1 - 0x21) >> 1) + 0x81
    if s1 > 0x9F:
        s1 += 0x40
    s2 = j2 + 0x1F + (1 if j2 >= 0x60 else 0) if j1 & 1 else j2 + 0x7E
    return bytes((s1, s2))


# A JIS cell CP932 has no character for (au's pictographs in rows 0x75-0x78, the empty cells of
# rows 0x29-0x2F and 0x7D-0x7E) decodes to a stand-in, one per cell, which
# rewrite.bodytext.encode_iso2022jp writes back as the same two JIS bytes: a body we rewrite
# keeps every character the sender's carrier put in (issue 20 item 7). Python has no carrier
# table, and the carriers' own Unicode tables disagree with each other, so a reversible mapping
# is what we can promise. Supplementary Private Use Area-A, not the BMP's: CP932 maps its
# user-defined area to U+E000-U+E757 and carrier tables use U+E468-U+EB88, so a BMP stand-in
# could be mistaken for a character the text really holds; these name exactly one JIS cell.
# (au rows 0x79-0x7B coincide with CP932's NEC-selected IBM kanji and read as those; they
# round-trip to the same characters.)
JIS_STANDIN_BASE = 0xF0000
JIS_STANDIN_END = JIS_STANDIN_BASE + 94 * 94


def jis_cell_of_standin(ch: str) -> bytes | None:
    """The two JIS bytes a stand-in from decode_iso2022jp came from, or None for other text."""
    index = ord(ch) - JIS_STANDIN_BASE
    if not 0 <= index < 94 * 94:
        return None
    return bytes((0x21 + index // 94, 0x21 + index % 94))


@cache
def _jis_cell(j1: int, j2: int) -> str:
    try:
        ch = _jis_pair_to_sjis(j1, j2).decode("cp932")
    except UnicodeDecodeError:
        ch = ""
    if len(ch) != 1:
        ch = chr(JIS_STANDIN_BASE + (j1 - 0x21) * 94 + (j2 - 0x21))
    return ch


def _eight_bit_run(run: bytes) -> str:
    # Raw 8-bit bytes do not belong in ISO-2022-JP; read a run of them on its own (UTF-8, else
    # CP932 as Japanese clients slip it in), so an undecodable byte becomes one U+FFFD and never
    # takes the ASCII letter after it as its trail byte.
    try:
        return run.decode("utf-8")
    except UnicodeDecodeError:
        return run.decode("cp932", "replace")


_ASCII_RUN = re.compile(rb"[^\x1b\x0e\x0f\x80-\xff]+")
_JIS_RUN = re.compile(rb"(?:[\x21-\x7e]{2})+")
_HIGH_RUN = re.compile(rb"[\x80-\xff]+")
_SHIFTS = {b"(B": "ascii", b"(J": "ascii", b"(H": "ascii", b"$@": "jis", b"$B": "jis",
           b"(I": "kana"}


def decode_iso2022jp(data: bytes) -> str:
    """ISO-2022-JP decoded the way Windows does (CP50220): JIS X 0208 rows map
    through CP932, so NEC special characters (①, ㈱, ⅰ) and half-width katakana survive.
    """
    # Fast path: the C codec handles plain JIS X 0208 text; NEC/IBM extensions, JIS-Roman and
    # half-width katakana fall through to the byte-level route below.
    if b"\x1b(J" not in data and b"\x1b(I" not in data and b"\x0e" not in data:
        try:
            return data.decode("iso2022_jp").translate(_JIS_TO_CP932)
        except UnicodeDecodeError:
            pass
    if _ESC not in data:  # no shift at all: Shift_JIS mislabelled, as some clients send it
        try:
            return data.decode("cp932")
        except UnicodeDecodeError:
            pass
    return _decode_iso2022jp_bytes(data)


def _decode_iso2022jp_bytes(data: bytes) -> str:
    out: list[str] = []
    mode = "ascii"  # ascii | jis | kana | other
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b >= 0x80:
            run = _HIGH_RUN.match(data, i)
            assert run is not None
            out.append(_eight_bit_run(run.group()))
            i = run.end()
            continue
        if b == _ESC:
            seq = data[i + 1:i + 4]
            if seq[:2] in _SHIFTS:
                mode, i = _SHIFTS[seq[:2]], i + 3
            elif seq[:3] == b"&@\x1b":  # JIS X 0208-1990 prefix: ESC & @ ESC $ B
                i += 3
            elif seq[:3] in (b"$(D", b"$(Q", b"$(O"):  # JIS X 0212 / 0213: not in CP932
                mode, i = "other", i + 4
            else:
                out.append("\x1b")
                i += 1
            continue
        if b in (0x0E, 0x0F):  # SO / SI: half-width katakana (CP50221 style)
            mode, i = ("kana" if b == 0x0E else "ascii"), i + 1
            continue
        if mode == "jis":
            pairs = _JIS_RUN.match(data, i)
            if pairs is not None:
                cells = pairs.group()
                out.extend(_jis_cell(cells[k], cells[k + 1]) for k in range(0, len(cells), 2))
                i = pairs.end()
                continue
        elif mode == "kana" and 0x21 <= b <= 0x5F:
            out.append(chr(0xFF61 + b - 0x21))  # CP932 0xA1-0xDF: U+FF61-U+FF9F
            i += 1
            continue
        elif mode == "other" and 0x21 <= b <= 0x7E and i + 1 < n:
            out.append("〓")
            i += 2
            continue
        elif mode == "ascii":
            text = _ASCII_RUN.match(data, i)
            assert text is not None
            out.append(text.group().decode("ascii"))
            i = text.end()
            continue
        out.append(chr(b))
        i += 1
    return "".join(out)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, falling back to a guess; never raises."""
    codec = codec_for(charset)
    if codec == "iso-2022-jp" or (codec is None and b"\x1b$" in data):
        return decode_iso2022jp(data)
    if codec and codec not in ("ascii",):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    return guess_decode(data)


def guess_decode(data: bytes) -> str:
    """Undeclared 8-bit text: UTF-8 if it is valid, then CP932 (Japanese clients), then Latin-1."""
    if b"\x1b$" in data:
        return decode_iso2022jp(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp932")
    except UnicodeDecodeError:
        pass
    return data.decode("latin-1")


def unescape_surrogates(text: str) -> str:
    """A header read from bytes keeps raw 8-bit as surrogate escapes; decode those bytes."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return guess_decode(text.encode("utf-8", "surrogateescape"))
