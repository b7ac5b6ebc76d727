"""Exact, faster replacements for dkimpy's whole-message regex passes (big messages only).

dkimpy splits the message with re.split and canonicalises a relaxed body with two re.sub
passes over every byte; on a 25 MB attachment that is over a second per signature check or
seal. The replacements return identical bytes (a property test holds them to it): they skip
a pass when its pattern cannot occur, which `in` finds at memchr speed.

The body passes also take a memoryview: the seal hands dkimpy the body of the message it is
about to send as a view (mailmoat.rewrite.seal.seal_parts), so a 25 MB body is not copied only
to be hashed. A view goes through dkimpy's pass (as bytes) only when that pass would change it.
"""

from __future__ import annotations

import re

import dkim
import dkim.canonicalization as canon

from mailmoat.headerform import with_modern_field_names

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")

_original_strip = canon.strip_trailing_whitespace
_original_compress = canon.compress_whitespace
_original_strip_lines = canon.strip_trailing_lines
_original_parse = dkim.rfc822_parse


# Literal patterns: re finds a literal at memchr speed in a view (a class such as [\t ] makes
# it test every byte, 0.35 s over 25 MB).
_TRAILING_WHITESPACE = (re.compile(rb" \r\n"), re.compile(rb"\t\r\n"))
_WHITESPACE_TO_COMPRESS = (re.compile(rb"\t"), re.compile(rb"  "))

Body = bytes | memoryview


def strip_trailing_whitespace(content: Body) -> Body:
    if isinstance(content, memoryview):
        if not any(p.search(content) for p in _TRAILING_WHITESPACE):
            return content
        content = bytes(content)
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _original_strip(content)  # type: ignore[no-any-return]


def compress_whitespace(content: Body) -> Body:
    if isinstance(content, memoryview):
        if not any(p.search(content) for p in _WHITESPACE_TO_COMPRESS):
            return content
        content = bytes(content)
    if b"\t" not in content and b"  " not in content:
        return content
    return _original_compress(content)  # type: ignore[no-any-return]


def strip_trailing_lines(content: Body) -> Body:
    # dkimpy's own uses bytes.endswith. A view that ends in exactly one CRLF (what a message
    # we seal ends in) is already canonical; any other view goes the original way as bytes.
    if isinstance(content, memoryview):
        if content[-2:].tobytes() == b"\r\n" and content[-4:-2].tobytes() != b"\r\n":
            return content
        content = bytes(content)
    return _original_strip_lines(content)  # type: ignore[no-any-return]


_original_relaxed_headers = canon.Relaxed.canonicalize_headers
_WHITESPACE_RUN = re.compile(rb"[\t ]+")


def relaxed_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """dkimpy's relaxed header canonicalisation (RFC 6376 §3.4.2) in one loop: it runs over
    every field for each signature checked or made, about 50 fields a message, and its three
    function calls and two regex passes per field were a tenth of the seal. Unfolding with
    replace removes what re.sub(b"\r?\n") does (each LF and a CR just before it)."""
    out = []
    for name, value in headers:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
        if b"\t" in value or b"  " in value:
            value = _WHITESPACE_RUN.sub(b" ", value)
        out.append((name.lower().rstrip(), value.strip() + b"\r\n"))
    return out


def rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    # dkimpy refuses `Subject : x` (RFC 5322 §4.5 obs-optional), which receivers must accept:
    # read it as `Subject: x` (mailmoat.headerform). Relaxed canonicalisation drops that white
    # space anyway, so a relaxed signature verifies the same.
    message = with_modern_field_names(message)
    blank = _BLANK_LINE.search(message)
    if blank is None or message[:1] in (b"\r", b"\n") or b"\r\r" in message:
        return _original_parse(message)  # type: ignore[no-any-return]
    # Headers: dkimpy's own parser on the header block alone. Body: re.split(b"\r?\n") joined
    # with CRLF is "one optional CR before each LF becomes CRLF", done here in C.
    headers, _ = _original_parse(message[:blank.end()])
    body = message[blank.end():]
    if body.count(b"\n") == body.count(b"\r\n"):
        return headers, body  # already CRLF throughout (what we seal): no two more copies
    return headers, body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def install() -> None:
    """Idempotent; called where dkimpy is imported (authentication and sealing)."""
    canon.strip_trailing_whitespace = strip_trailing_whitespace
    canon.compress_whitespace = compress_whitespace
    canon.strip_trailing_lines = strip_trailing_lines
    canon.Relaxed.canonicalize_headers = staticmethod(relaxed_headers)  # type: ignore[method-assign,assignment]
    dkim.rfc822_parse = rfc822_parse
