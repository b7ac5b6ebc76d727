"""An exact, faster tokenizer step for authres, the Authentication-Results parser.

authres reads a header token by token through `_parse_pattern`, which (its own TODO says so)
recompiles the pattern and runs `re.sub` with a callback on every call: ~65,000 calls and about
2.5 ms per header on the corpus, most of an ARC seal's time (dkimpy's sign() parses our
Authentication-Results to write the ARC-Authentication-Results). The replacement compiles each
pattern once and cuts the match off the front of the text; the parse is the same step for
step, so the results, the remaining text and the errors are identical (a property test holds
it to the original on generated and real headers).
"""

from __future__ import annotations

import re
from typing import Any

import authres.core

_original_parse_pattern = authres.core.AuthenticationResultsHeader._parse_pattern
_compiled: dict[str, re.Pattern[str]] = {}


def _parse_pattern(self: Any, pattern: str | re.Pattern[str]) -> re.Match[str] | None:
    if isinstance(pattern, str):
        regexp = _compiled.get(pattern)
        if regexp is None:
            # authres prefixes "^" and matches case-insensitively; "^" without MULTILINE only
            # matches at the start, so sub(…, 1) there is "match at 0, drop what matched".
            regexp = _compiled[pattern] = re.compile(r"^" + pattern, re.I)
        match = regexp.match(self._parse_text)
        if match is not None:
            self._parse_text = self._parse_text[match.end():]
        return match
    # A compiled pattern is not prefixed: sub(…, 1) removes its first match anywhere.
    match = pattern.search(self._parse_text)
    if match is not None:
        text = self._parse_text
        self._parse_text = text[:match.start()] + text[match.end():]
    return match


def install() -> None:
    """Idempotent; called where authres parses on the message path (sealing, headers)."""
    authres.core.AuthenticationResultsHeader._parse_pattern = _parse_pattern  # type: ignore[method-assign]


def original_parse_pattern() -> Any:
    """The library's own step, for the equivalence test."""
    return _original_parse_pattern
