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

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def has_control(value: str) -> bool:
    """Whether `value` holds a control character or a Unicode line/paragraph separator."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


def header_safe(value: str) -> str:
    """`value` without the characters that could end or fold a header line."""
    if not has_control(value):
        return value
    return "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Zl", "Zp"))


def crlf_normalised(data: bytes) -> bytes:
    """Every bare CR and bare LF as CRLF; the very same object when there is none."""
    return _LINE_ENDS.sub(b"\r\n", data) if _BARE.search(data) else data
