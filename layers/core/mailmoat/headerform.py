"""Obsolete header-field syntax (RFC 5322 §4.5), read the way receivers must accept it.

`obs-optional` allows white space between a field name and its colon (`Subject : x`). The
stdlib parser takes such a line for the start of the body (MissingHeaderBodySeparatorDefect:
every header after it becomes body text), and dkimpy refuses it outright (MessageFormatError),
so a message with one was read without its Subject and then held because it could not be
sealed. The top-level header block is given the modern form — the same field name, the colon
straight after it — before any of them reads it. Relaxed canonicalisation (RFC 6376 §3.4.2)
deletes that white space anyway, so a sender's relaxed DKIM signature verifies the same on
either form, and the ARC seal we add is computed over exactly the bytes we deliver.

MIME part headers inside the body are left alone: only the top-level block is a header block to
dkimpy, and the stdlib parser reads a part's odd header as part text, which the scan sees.
"""

from __future__ import annotations

import re

# A field line whose name (printable US-ASCII but ":", RFC 5322 §3.6.8) is followed by white
# space before the colon. Continuation lines start with white space and never match.
_OBSOLETE_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def header_block_end(raw: bytes) -> int:
    """Where the top-level header block ends (the first empty line), or the whole message."""
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    match = _BLANK_LINE.search(raw)
    return match.start() + 1 if match is not None else len(raw)


def with_modern_field_names(raw: bytes) -> bytes:
    """`raw` with `Name<WSP>:` field lines of the top-level header block rewritten as `Name:`;
    the very same object when there is none (the common case costs one bounded search)."""
    end = header_block_end(raw)
    head = raw[:end]
    if b" :" not in head and b"\t:" not in head:
        return raw
    fixed = _OBSOLETE_NAME.sub(rb"\1:", head)
    return raw if fixed == head else fixed + raw[end:]
