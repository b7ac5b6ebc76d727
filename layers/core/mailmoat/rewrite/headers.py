"""Header work on raw bytes: our Authentication-Results, X-Spam-*, removal of spoofed copies."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import authres
import authres.arc
import authres.dmarc

from mailmoat import authres_speedups
from mailmoat.context import AuthResult

authres_speedups.install()

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_TOKEN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# \Z, not $: "$" also matches before a final newline, which would let "a@b.example\n" through.
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}\Z")
_DOMAIN = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
_SPAM_HEADERS = frozenset({b"x-spam-flag", b"x-spam-status", b"x-spam-score"})
_ARC_HEADERS = frozenset({b"arc-seal", b"arc-message-signature", b"arc-authentication-results"})
_INSTANCE = re.compile(rb"(?:^|[\s;])i\s*=\s*\d+", re.IGNORECASE)


@dataclass(slots=True)
class RawMessage:
    """A message split into header fields (each with its continuation lines and line ending,
    byte-exact) and everything after them (the blank line and the body, untouched)."""

    fields: list[bytes]
    # A view of the message it was split from (a 25 MB body is not copied to be split), or
    # bytes where the split had to build it.
    rest: bytes | memoryview
    linesep: bytes

    @classmethod
    def split(cls, raw: bytes) -> RawMessage:
        first_eol = raw.find(b"\n")
        linesep = b"\r\n" if first_eol > 0 and raw[first_eol - 1:first_eol] == b"\r" else b"\n"
        match = _BLANK_LINE.search(raw)
        rest: bytes | memoryview
        if raw.startswith((b"\r\n", b"\n")):
            head, rest = b"", memoryview(raw)
        elif match is None:
            head, rest = raw, b""
        else:
            cut = match.start() + (2 if raw[match.start():match.start() + 2] == b"\r\n" else 1)
            head, rest = raw[:cut], memoryview(raw)[cut:]
        fields: list[bytes] = []
        lines = head.splitlines(keepends=True)
        for index, line in enumerate(lines):
            if line[:1] in (b" ", b"\t"):
                if fields:  # a continuation before any field is noise, and so dropped
                    fields[-1] += line
                continue
            if _FIELD_NAME.match(line):
                fields.append(line)
                continue
            if index == 0 and line.startswith(b"From "):
                continue  # an mbox separator, as the stdlib parser also drops it
            # Like the stdlib parser: the first line that is no header field starts the body.
            # The blank line is made explicit so that every later reader agrees.
            rest = linesep + b"".join(lines[index:]) + rest
            break
        if fields and not fields[-1].endswith(b"\n"):
            fields[-1] += linesep
        if not rest:
            rest = linesep
        return cls(fields, rest, linesep)

    def to_bytes(self) -> bytes:
        return b"".join([*self.fields, self.rest])

    @staticmethod
    def name_of(field: bytes) -> bytes:
        match = _FIELD_NAME.match(field)
        return match.group(1).lower() if match else b""

    @staticmethod
    def value_of(field: bytes) -> str:
        value = field.split(b":", 1)[1] if b":" in field else b""
        return " ".join(value.decode("latin-1").split())

    def remove(self, predicate: Callable[[bytes, str], bool]) -> int:
        kept = [f for f in self.fields if not predicate(self.name_of(f), self.value_of(f))]
        removed = len(self.fields) - len(kept)
        self.fields = kept
        return removed

    def prepend(self, lines: Iterable[str]) -> None:
        self.fields[:0] = [line.encode("utf-8") + self.linesep for line in lines]

    def has(self, name: bytes) -> bool:
        return any(self.name_of(f) == name for f in self.fields)

    def has_arc_chain(self) -> bool:
        return any(self.name_of(f) in _ARC_HEADERS and _INSTANCE.search(f.split(b":", 1)[1])
                   for f in self.fields)


def authserv_id_of(value: str) -> str:
    """The authserv-id of an Authentication-Results value (RFC 8601 §2.2), comments ignored.
    One pass over the value, so deeply nested comments cost no more than their length."""
    out: list[str] = []
    depth = 0
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
            continue
        if depth:
            if ch == "\\":
                escaped = True
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if not depth:
                    out.append(" ")
            continue
        if ch == "(":
            depth += 1
        elif ch == ";":
            break
        else:
            out.append(ch)
    words = "".join(out).split()
    return words[0].lower() if words else ""


def remove_claims_of(message: RawMessage, authserv_id: str) -> int:
    """Drop incoming headers that pretend to be ours: Authentication-Results with our
    authserv-id, and X-Spam-Flag / X-Spam-Status (at this boundary only we set those).
    ARC-Authentication-Results stay: they belong to earlier ARC sets and are signed."""
    ours = authserv_id.lower()

    def claims(name: bytes, value: str) -> bool:
        if name == b"authentication-results":
            return authserv_id_of(value) == ours
        return name in _SPAM_HEADERS

    return message.remove(claims)


def remove_unreadable_results(message: RawMessage) -> int:
    """Drop Authentication-Results fields that are not UTF-8 or that authres cannot parse
    (e.g. an unknown version): no reader can use them, and the ARC signer (which parses every
    one of them) would fail on the whole message."""
    def unreadable(data: bytes) -> bool:
        try:
            authres.AuthenticationResultsHeader.parse(data.decode("utf-8"))
        except UnicodeDecodeError:
            return True
        except Exception:  # authres raises its own hierarchy and ValueError on bad input
            return True
        return False

    kept = [f for f in message.fields
            if not (message.name_of(f) == b"authentication-results" and unreadable(f))]
    removed = len(message.fields) - len(kept)
    message.fields = kept
    return removed


def _result(value: str) -> str:
    value = (value or "none").strip().lower()
    return value if _TOKEN.match(value) else "permerror"


def _results_header(authserv_id: str, auth: AuthResult, *, mail_from: str | None,
                    header_from_domain: str | None, dkim_domain: str | None,
                    arc_result: str) -> authres.AuthenticationResultsHeader:
    """Our Authentication-Results header as an authres object.
    Property values that are not plain addresses or domains are left out rather than quoted
    wrongly: they come from the sender."""
    spf = authres.SPFAuthenticationResult(
        result=_result(auth.spf),
        smtp_mailfrom=mail_from if mail_from and _ADDRESS.match(mail_from) else None)
    dkim = authres.DKIMAuthenticationResult(
        result=_result(auth.dkim),
        header_d=dkim_domain if dkim_domain and _DOMAIN.match(dkim_domain) else None)
    policy = (auth.dmarc_policy or "").lower()
    dmarc = authres.dmarc.DMARCAuthenticationResult(
        result=_result(auth.dmarc),
        header_from=header_from_domain if header_from_domain and _DOMAIN.match(header_from_domain)
        else None,
        policy=policy if _TOKEN.match(policy) else None)
    arc = authres.arc.ARCAuthenticationResult(result=_result(arc_result))
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id,
                                                 results=[spf, dkim, dmarc, arc])
    return header


def our_results_field(authserv_id: str, auth: AuthResult, *, mail_from: str | None,
                      header_from_domain: str | None, dkim_domain: str | None, arc_result: str,
                      linesep: str) -> str:
    """Our Authentication-Results field, folded for the message. The seal's signer parses it
    again; it is remembered so that parse is a lookup (authres_speedups.remember)."""
    header = _results_header(authserv_id, auth, mail_from=mail_from,
                             header_from_domain=header_from_domain, dkim_domain=dkim_domain,
                             arc_result=arc_result)
    field = fold(str(header), linesep)
    authres_speedups.remember(field, header)
    return field


def fold(header: str, linesep: str) -> str:
    """Fold at the `;` between results, so no line gets near the 998-octet limit."""
    return header.replace("; ", ";" + linesep + "\t")


def spam_headers(score: float | None) -> list[str]:
    status = "Yes" if score is None else f"Yes, score={score:.1f}"
    lines = ["X-Spam-Flag: YES", f"X-Spam-Status: {status}"]
    if score is not None:
        lines.append(f"X-Spam-Score: {score:.1f}")
    return lines


_ENCODED_WORD_START = re.compile(r"^=\?[^?\s]+\?[bBqQ]\?")
_MAX_LINE = 998


def prefix_subject(message: RawMessage, prefix: str, current: str | None) -> bool:
    """Put `prefix` in front of the (first) Subject, bytes of the original value untouched.

    An ASCII prefix goes in as is. A non-ASCII one becomes an RFC 2047 encoded word (UTF-8);
    its trailing space goes inside the word when the original value starts with an encoded
    word (whitespace between two encoded words is not displayed) and outside otherwise.
    Nothing happens when `current` (the decoded subject) already starts with the prefix."""
    from email.header import Header

    stripped = prefix.strip()
    if not stripped or (current or "").lstrip().startswith(stripped):
        return False
    index = next((i for i, f in enumerate(message.fields) if message.name_of(f) == b"subject"), None)
    if index is None:
        message.fields.append(b"Subject: " + _encode_prefix(stripped, Header).encode("ascii")
                              + message.linesep)
        return True
    field = message.fields[index]
    name, _, value = field.partition(b":")
    original = value.lstrip(b" \t")
    starts_encoded = bool(_ENCODED_WORD_START.match(original[:80].decode("latin-1")))
    if stripped.isascii():
        head = stripped + " "
    elif starts_encoded:
        head = _encode_prefix(stripped + " ", Header) + " "
    else:
        head = _encode_prefix(stripped, Header) + " "
    first_line = original.split(b"\n", 1)[0]
    joint = b"" if len(name) + 2 + len(head) + len(first_line) < _MAX_LINE else \
        message.linesep + b" "  # fold rather than push the first line past 998 octets
    message.fields[index] = name + b": " + head.encode("ascii").rstrip(b" ") + \
        (joint or b" ") + (original if original.strip() else message.linesep)
    return True


def _encode_prefix(text: str, header: type) -> str:
    if text.isascii():
        return text
    encoded: str = header(text, "utf-8").encode(linesep=" ")
    return encoded
