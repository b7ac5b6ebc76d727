"""Envelope text and line endings at the SMTP boundary (issue 19, items 1 and 2).

aiosmtpd ends a command line only at CRLF, so a bare CR (or NUL, or any other control) can sit
inside a MAIL FROM or RCPT TO address; written into Return-Path or Authentication-Results, it
starts headers of the attacker's choosing. Such addresses are refused at the command, and every
envelope value written into a header goes through `header_safe` as well (the AWS path reads its
envelope from stored headers, not from our SMTP session).

Outbound, a body we pass on may hold bare CR or LF; a receiving host that ends DATA on
`<CR>.<CR>` (or `<LF>.<LF>`) would then take what follows as a second message, sent by the
trusted gateway (SMTP smuggling). `crlf_normalised` gives every line a CRLF before smtplib's
dot-stuffing, which only looks after LF.
"""

from __future__ import annotations

import re
import unicodedata
from typing import overload

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")


def has_control(value: str) -> bool:
    """Whether `value` holds a control character or a Unicode line/paragraph separator."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


def header_safe(value: str) -> str:
    """`value` without the characters that could end or fold a header line."""
    if not has_control(value):
        return value
    return "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Zl", "Zp"))


@overload
def crlf_normalised(data: bytes) -> bytes: ...
@overload
def crlf_normalised(data: memoryview) -> bytes | memoryview: ...
def crlf_normalised(data: bytes | memoryview) -> bytes | memoryview:
    """Every bare CR and bare LF as CRLF; the very same object when there is none (a view
    stays a view)."""
    return _LINE_ENDS.sub(b"\r\n", data) if has_bare_line_end(data) else data


def _counts_clean(whole: bytes, *, cr_too: bool) -> bool:
    crlf = whole.count(b"\r\n")
    return whole.count(b"\n") == crlf and (not cr_too or whole.count(b"\r") == crlf)


def _whole(data: bytes | memoryview, *, cr_too: bool) -> object:
    """What to count for `data`: itself, or the buffer a view views when no CRLF is cut by
    the view's ends (a view from between CR and LF makes a bare LF the buffer does not have)."""
    if not isinstance(data, memoryview):
        return data
    if data[:1].tobytes() == b"\n" or (cr_too and data[-1:].tobytes() == b"\r"):
        return None
    return data.obj


def has_bare_line_end(data: bytes | memoryview) -> bool:
    """Whether `data` holds a CR not before LF or an LF not after CR. Counted at memchr speed
    (the regex alone takes 1.5 s over a 25 MB attachment: its pattern has no literal to skip
    to); a view is first answered from the buffer it views, which holds all of it."""
    return _has_bare(data, cr_too=True)


def has_bare_lf(data: bytes | memoryview) -> bool:
    """Whether `data` holds an LF not after CR (a bare CR does not count); as above."""
    return _has_bare(data, cr_too=False)


def _has_bare(data: bytes | memoryview, *, cr_too: bool) -> bool:
    whole = _whole(data, cr_too=cr_too)
    if isinstance(whole, bytes):
        if _counts_clean(whole, cr_too=cr_too):
            return False
        if whole is data:
            return True  # the counts are exact for the bytes themselves
    return (_BARE if cr_too else _BARE_LF).search(data) is not None
