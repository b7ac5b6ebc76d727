"""What the CLI writes is shown on an operator's terminal: control characters go out escaped.

Audit entries, log rows, subjects and addresses come from unauthenticated mail and web input.
Printed raw, `\\x1b]0;…\\x07` retitles the window, `\\x1b[2J` clears it, CSI sequences move the
cursor over earlier lines, `\\r` overwrites a line, and bidi controls reorder what is read. Every
such character is written as a visible `\\uXXXX` escape: the form JSON itself uses, so `process
--json` stays valid JSON with the same values, and text output shows what was there.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

# C0 except TAB and LF (which structure our own output), DEL, C1 (0x9b is a one-byte CSI), and
# the Unicode format characters that reorder or hide text (bidi embeddings, overrides and
# isolates, the Arabic letter mark, zero-width joiners are harmless and left alone).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with every terminal control character as a `\\uXXXX` escape."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class EscapingStream:
    """A text stream that writes through `visible`; everything else goes to the wrapped one
    (`buffer` too: binary writes are data, written as they are, e.g. a CSV export in CP932)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(visible(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def escape_standard_streams() -> None:
    """Wrap sys.stdout and sys.stderr (the CLI's entry point calls this once, before logging
    is configured, so log lines are escaped too)."""
    import sys

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, EscapingStream):
            setattr(sys, name, EscapingStream(stream))
