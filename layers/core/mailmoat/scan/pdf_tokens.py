"""Active content in a PDF whose structure cannot be parsed: count the name tokens, as pdfid
does, with #xx escapes in names decoded (/J#61vaScript is /JavaScript)."""

from __future__ import annotations

import re

# Name → (symbol, what it means). The readers that repair broken files still run these.
ACTIVE_NAMES: dict[bytes, tuple[str, str]] = {
    b"/JavaScript": ("PDF_JAVASCRIPT", "JavaScript"),
    b"/JS": ("PDF_JAVASCRIPT", "JavaScript"),
    b"/OpenAction": ("PDF_OPENACTION", "document opens with an action"),
    b"/AA": ("PDF_AA", "additional actions"),
    b"/Launch": ("PDF_LAUNCH", "Launch action (runs a program)"),
    b"/EmbeddedFile": ("PDF_EMBEDDED_FILE", "embedded file"),
    b"/EmbeddedFiles": ("PDF_EMBEDDED_FILE", "embedded files"),
    b"/RichMedia": ("PDF_RICHMEDIA", "rich media (Flash, video)"),
    b"/XFA": ("PDF_XFA", "XFA form (may carry scripts)"),
    b"/AcroForm": ("PDF_ACROFORM", "interactive form"),
}
MAX_SCAN_BYTES = 64 * 1024 * 1024

# A PDF name: '/' then regular characters (PDF 32000 §7.3.5: not white space, not a delimiter).
_NAME = re.compile(rb"/[^\x00\t\n\x0c\r ()<>\[\]{}/%]*")
_HEX_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
# What may follow /OpenAction: a destination array only opens a page.
_AFTER = re.compile(rb"[\x00\t\n\x0c\r ]*(\[)?")


def decode_name(raw: bytes) -> bytes:
    return _HEX_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def scan_tokens(data: bytes) -> dict[bytes, int]:
    """How often each active name occurs, an /OpenAction that is a destination not counted."""
    counts: dict[bytes, int] = {}
    view = data[:MAX_SCAN_BYTES]
    for match in _NAME.finditer(view):
        name = decode_name(match.group())
        if name not in ACTIVE_NAMES:
            continue
        if name == b"/OpenAction":
            after = _AFTER.match(view, match.end())
            if after is not None and after.group(1):
                continue  # [3 0 R /Fit]: opens a page, runs nothing
        counts[name] = counts.get(name, 0) + 1
    return counts


def token_findings(data: bytes) -> list[tuple[str, str]]:
    """(symbol, detail) per active name found, for a PDF that could not be parsed."""
    out: list[tuple[str, str]] = []
    for name, count in scan_tokens(data).items():
        symbol, meaning = ACTIVE_NAMES[name]
        out.append((symbol, f"{meaning}: {name.decode('latin-1')} ×{count} (raw token scan)"))
    return out
