"""Decoding bytes in the charsets real mail uses, Japanese ones first-class; never raises."""

from __future__ import annotations

import codecs

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
    out = bytearray()
    mode = "ascii"  # ascii | jis | kana
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == _ESC:
            seq = data[i + 1:i + 4]
            if seq[:2] in (b"(B", b"(J", b"(H"):
                mode, i = "ascii", i + 3
                continue
            if seq[:2] in (b"$@", b"$B"):
                mode, i = "jis", i + 3
                continue
            if seq[:3] == b"&@\x1b":  # JIS X 0208-1990 prefix: ESC & @ ESC $ B
                i += 3
                continue
            if seq[:2] == b"(I":
                mode, i = "kana", i + 3
                continue
            if seq[:3] in (b"$(D", b"$(Q", b"$(O"):  # JIS X 0212 / 0213: not in CP932
                mode, i = "other", i + 4
                continue
            out.append(b)
            i += 1
            continue
        if b == 0x0E:  # SO: half-width katakana (CP50221 style)
            mode, i = "kana", i + 1
            continue
        if b == 0x0F:
            mode, i = "ascii", i + 1
            continue
        if b in (0x0A, 0x0D):
            out.append(b)
            i += 1
            continue
        if mode == "jis" and 0x21 <= b <= 0x7E and i + 1 < n and 0x21 <= data[i + 1] <= 0x7E:
            out += _jis_pair_to_sjis(b, data[i + 1])
            i += 2
            continue
        if mode == "kana" and 0x21 <= b <= 0x5F:
            out.append(b + 0x80)
            i += 1
            continue
        if mode == "other" and 0x21 <= b <= 0x7E and i + 1 < n:
            out += "〓".encode("cp932")
            i += 2
            continue
        out.append(b)
        i += 1
    return out.decode("cp932", "replace")


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
