"""Parse a raw message, walk its MIME tree (bounded) and tell attachments from everything else (DESIGN §3)."""

from __future__ import annotations

import binascii
import email.message
import email.utils
import re
import secrets
from dataclasses import dataclass, field
from email import policy
from email.errors import MessageDefect, UndecodableBytesDefect
from email.header import decode_header
from email.headerregistry import BaseHeader, ContentDispositionHeader, ContentTypeHeader, HeaderRegistry
from email.message import EmailMessage, _parseparam  # type: ignore[attr-defined]  # stdlib splitter
from email.parser import BytesHeaderParser, BytesParser
from typing import Any

from mailmoat.charsets import codec_for, decode_bytes, decode_iso2022jp, unescape_surrogates
from mailmoat.headerform import with_modern_field_names

# Extensions of files a third-party tool encrypted with its own format; they are
# passed through untouched because nothing here could read them (DESIGN §3).
DEFAULT_THIRD_PARTY_ENCRYPTED = frozenset({"atc"})

_REPORT_TYPES = frozenset({
    "message/disposition-notification",
    "text/rfc822-headers",
    "message/delivery-status",
    "message/global-disposition-notification",
    "message/global-delivery-status",
    "message/global-headers",
})
_SMIME_TYPES = frozenset({
    "application/pkcs7-mime",
    "application/x-pkcs7-mime",
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
})


@dataclass(frozen=True, slots=True)
class WalkLimits:
    max_parts: int = 5000
    max_depth: int = 50


@dataclass(slots=True)
class Part:
    """One node of the MIME tree, numbered like IMAP body sections ("1", "2.1", "3.2")."""

    path: str
    content_type: str
    depth: int
    node: email.message.Message
    disposition: str | None = None
    filename: str | None = None
    filename_source: str | None = None  # "filename" | "name" | None
    content_id: str | None = None
    kind: str = "attachment"  # attachment | body | inline-image | report | smime | message
                              # | container | third-party-encrypted
    inside_message: str | None = None  # path of the closest enclosing attached message
    notes: list[tuple[str, str]] = field(default_factory=list)  # (symbol, detail)
    decode_defects: list[str] = field(default_factory=list)  # found while decoding the body
    _payload: bytes | None = field(default=None, repr=False)

    @property
    def is_attachment(self) -> bool:
        return self.kind == "attachment"

    @property
    def charset(self) -> str | None:
        value = self.node.get_param("charset")
        return value if isinstance(value, str) else None

    def payload(self) -> bytes:
        """The decoded body bytes (base64 / quoted-printable undone, best effort on broken input)."""
        if self._payload is None:
            self._payload = self._decode()
        return self._payload

    def release_large(self) -> None:
        """Forget the decoded bytes of a large part (they come back from the tree on the next
        payload()): the scan holds a 25 MB attachment once, not for the rest of the pipeline."""
        if self._payload is not None and len(self._payload) >= _LARGE_PAYLOAD:
            self._payload = None

    def _decode(self) -> bytes:
        if self.node.is_multipart():
            return b""
        large = _large_clean_base64(self.node)
        if large is not None:
            return large
        before = len(self.node.defects)
        try:
            data = self.node.get_payload(decode=True)
        except Exception as exc:  # a hostile encoding must not escape as an exception
            self.decode_defects.append(type(exc).__name__)
            return b""
        # get_payload() reports broken base64 / quoted-printable by appending defects.
        self.decode_defects.extend(type(d).__name__ for d in self.node.defects[before:])
        if isinstance(data, bytes):
            return data
        inner = self.node.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
            try:
                return inner[0].as_bytes(policy=PARSE_POLICY.clone(linesep="\r\n"))
            except Exception as exc:
                self.decode_defects.append(type(exc).__name__)
        return b""

    def text(self) -> str:
        """The part's text, in its declared charset with Japanese-aware fallbacks."""
        return decode_bytes(self.payload(), self.charset)


# get_payload(decode=True) encodes the text to bytes, splits it into lines and joins them
# before decoding: on a 25 MB attachment three more copies of it and a list of 450,000 lines.
# Base64 that is only alphabet and line ends, correctly padded, decodes to the same bytes with
# no defects in one pass of binascii over the text itself; anything else takes the stdlib path.
_CLEAN_BASE64 = re.compile(r"[A-Za-z0-9+/\r\n]*(?:[A-Za-z0-9+/]={0,2})?[\r\n]*")
_LARGE_PAYLOAD = 1_000_000


def _large_clean_base64(node: email.message.Message) -> bytes | None:
    payload = node.get_payload()
    if not isinstance(payload, str) or len(payload) < _LARGE_PAYLOAD \
            or str(node.get("content-transfer-encoding", "")).strip().lower() != "base64" \
            or not payload.isascii() or _CLEAN_BASE64.fullmatch(payload) is None:
        return None
    if (len(payload) - payload.count("\n") - payload.count("\r")) % 4:
        return None  # unpadded: the stdlib's path says how it is broken
    return binascii.a2b_base64(payload)


@dataclass(slots=True)
class ParsedMessage:
    message: EmailMessage
    parts: list[Part]
    findings: list[tuple[str, str, str]]  # (symbol, target, detail)
    truncated: bool = False

    @property
    def attachments(self) -> list[Part]:
        return [p for p in self.parts if p.is_attachment]


# The stdlib feed parser costs ~10 µs per line: a 25 MB attachment (450,000 base64 lines)
# takes seconds. Runs of pure base64 lines can never hold a MIME boundary or a header (a
# delimiter starts with "--", which is not in the alphabet), so we lift long runs out before
# parsing, leave one token line in their place, and put the original text back into the
# parsed tree: same tree, same bytes, a fraction of the time.
# One match is a maximal block of base64 lines (each line is matched whole, up to its first
# LF, so the block cannot end early); blocks shorter than _LIFT_MIN_LINES are kept in place.
# Matching blocks and counting afterwards keeps this linear: a `{1024,}` quantifier re-scans
# a shorter block from each of its lines.
# Possessive (`++`, Python 3.11+): a block is never given back line by line, so the regex
# engine keeps no backtracking state per line (the plain `+` held ~150 MB for a 25 MB block).
_BASE64_LINES = re.compile(rb"^(?:[A-Za-z0-9+/]{40,}+={0,2}\r?\n)++", re.MULTILINE)
_LIFT_MIN_LINES = 1024
_LIFT_MIN_BYTES = 1_000_000


def _lift_base64_runs(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """Replace long base64 runs by `MAILMOATRUN<nonce><n>` lines; returns the token → text map."""
    if len(raw) < _LIFT_MIN_BYTES:
        return raw, {}
    nonce = secrets.token_hex(8)  # unguessable, so message content cannot forge a token
    runs: dict[str, str] = {}
    out: list[bytes] = []
    pos = 0
    for match in _BASE64_LINES.finditer(raw):
        start, end = match.span()
        if raw.count(b"\n", start, end) < _LIFT_MIN_LINES:
            continue
        eol = b"\r\n" if raw[end - 2:end] == b"\r\n" else b"\n"
        token = f"MAILMOATRUN{nonce}{len(runs):06d}"
        # The line ending stays in the lifted text: the parser may give it to the boundary.
        # Decoded straight from the buffer: no bytes copy of the block on the way to the text.
        runs[token] = str(memoryview(raw)[start:end - len(eol)], "ascii")
        out += (raw[pos:start], token.encode(), eol)
        pos = end
    if not runs:
        return raw, {}
    out.append(raw[pos:])
    return b"".join(out), runs


def _restore_base64_runs(msg: email.message.Message, runs: dict[str, str]) -> None:
    def put_back(text: str) -> str:
        for token, run in runs.items():
            if token in text:
                text = text.replace(token, run)
        return text

    for node in msg.walk():
        for attr in ("preamble", "epilogue"):
            value = getattr(node, attr, None)
            if isinstance(value, str) and "MAILMOATRUN" in value:
                setattr(node, attr, put_back(value))
        payload = node.get_payload() if not node.is_multipart() else None
        if isinstance(payload, str) and "MAILMOATRUN" in payload:
            whole = runs.pop(payload.rstrip("\r\n"), None)
            if whole is not None:
                # The common case, a part that is one run: its text as is, not a copy made by
                # replace() while the map still holds the original (twice the run in memory).
                node.set_payload(whole + payload[len(payload.rstrip("\r\n")):])
            else:
                node.set_payload(put_back(payload))


_RFC2231_CHARSET = re.compile(r"(\*\s*=\s*)[^'\";\s]*'")


class _TolerantParams:
    """The stdlib lets a UnicodeDecodeError from an RFC 2231 value escape the parser: one
    `name*=iso-2022-jp''` with NEC/IBM characters (①, 髙, 﨑, ㈱), which Python's strict
    iso2022_jp refuses, failed the whole message. Then we decode them, the CP50220 way."""

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        try:
            super().parse(value, kwds)  # type: ignore[misc]
        except UnicodeDecodeError:
            # The structure from the stdlib, every RFC 2231 charset read as ASCII (cannot fail).
            super().parse(_RFC2231_CHARSET.sub(r"\1us-ascii'", value), kwds)  # type: ignore[misc]
            try:
                params = {key.lower(): text for key, text in _decoded_params(value)}
            except Exception:  # hostile parameters: the part keeps its type, loses the names
                params = {}
            kwds["params"] = params
            kwds["defects"].append(UndecodableBytesDefect("parameter not in its declared charset"))


_CACHED_FIELDS = frozenset({"content-type", "content-disposition", "content-transfer-encoding",
                            "mime-version", "content-id"})
_CACHED_VALUE_MAX = 2048
_CACHED_HEADERS_MAX = 4096


class _HeaderClasses(HeaderRegistry):
    """Header classes built once per registered name (the stdlib builds one per access)."""

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[str, type[BaseHeader]] = {}
        self._parsed: dict[tuple[str, str], BaseHeader] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower() if name.lower() in self.registry else ""
        if key not in self._built:
            self._built[key] = super().__getitem__(name)
        return self._built[key]

    def __call__(self, name: str, value: str) -> BaseHeader:
        # policy.default parses a header on every access, and the feed parser alone asks for
        # each part's Content-Type several times: the same (name, value) is the same header
        # object. Header objects are immutable (a str with read-only properties), so one is
        # shared safely; only the MIME fields are kept, and only short values.
        lowered = name.lower()
        if lowered not in _CACHED_FIELDS or len(value) > _CACHED_VALUE_MAX:
            return self[name](name, value)
        key = (name, value)
        header = self._parsed.get(key)
        if header is None:
            header = self[name](name, value)
            if len(self._parsed) >= _CACHED_HEADERS_MAX:
                self._parsed.clear()
            self._parsed[key] = header
        return header


_HEADERS = _HeaderClasses()  # it adds BaseHeader to each class, as for the stdlib's own
_HEADERS.map_to_type("content-type", type("TolerantContentType", (_TolerantParams, ContentTypeHeader), {}))
_HEADERS.map_to_type("content-disposition",
                     type("TolerantContentDisposition", (_TolerantParams, ContentDispositionHeader), {}))
PARSE_POLICY = policy.default.clone(header_factory=_HEADERS)  # policy.default but for the above


def parse_bytes(raw: bytes) -> tuple[EmailMessage, list[tuple[str, str, str]]]:
    """Parse with policy.default. Returns the message and parse findings; never raises."""
    findings: list[tuple[str, str, str]] = []
    raw = with_modern_field_names(raw)  # `Subject : x` is a header, not the start of the body
    lifted, runs = _lift_base64_runs(raw)
    try:
        msg = BytesParser(policy=PARSE_POLICY).parsebytes(lifted)
        if runs:
            _restore_base64_runs(msg, runs)
    except RecursionError:
        findings.append(("MIME_PARSE_FAILED", "message", "nesting too deep for the parser"))
        msg = BytesHeaderParser(policy=PARSE_POLICY).parsebytes(raw)
    except Exception as exc:  # pragma: no cover - the stdlib parser is documented not to raise
        findings.append(("MIME_PARSE_FAILED", "message", type(exc).__name__))
        msg = EmailMessage(policy=PARSE_POLICY)
    if not isinstance(msg, EmailMessage):  # pragma: no cover - policy.default gives EmailMessage
        raise TypeError("policy.default parser did not return EmailMessage")
    if not msg.keys():
        findings.append(("NO_HEADERS", "message", ""))
    return msg, findings


def header_text(msg: email.message.Message, name: str) -> str | None:
    """A header as readable text, raw 8-bit (as Japanese clients send) decoded too."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            return _decode_header_value(value)
    return None


# RFC 2047 §5: white space or the end follows an encoded word, and text "=" is "=3D" in a Q word.
# So "=" glued after "?=", or closing a Q word's text, is a broken encoder's (a QP soft break,
# miscounted padding), never the sender's text: dropped. "a = b" and "x=1" in text stay.
_STRAY_AFTER_WORD = re.compile(r"(=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=)=+(?=\s|$)")
_STRAY_IN_Q_WORD = re.compile(r"(=\?[^?\s]+\?[Qq]\?[^?\s]*?)=(\?=)")


def _decode_header_value(value: str) -> str:
    value = unescape_surrogates(value)
    if "\x1b" in value and value.isascii():
        # Raw ISO-2022-JP, as Japanese clients write names and subjects (no encoded word).
        value = decode_iso2022jp(value.encode("ascii"))
    if "=?" not in value:
        return " ".join(value.split())
    if "?==" in value or "=?=" in value:
        value = _STRAY_IN_Q_WORD.sub(r"\1\2", _STRAY_AFTER_WORD.sub(r"\1", value))
    try:
        chunks = decode_header(value)
    except Exception:
        return " ".join(value.split())
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset) if charset else chunk.decode("ascii", "replace"))
        else:
            out.append(chunk)
    return " ".join("".join(out).split())


def _raw_header(node: email.message.Message, name: str) -> str | None:
    for key, value in node.raw_items():
        if key.lower() == name:
            return str(value)
    return None


def _param(node: email.message.Message, header: str, param: str) -> str | None:
    """A header parameter decoded from RFC 2231 (continuations, charset), encoded words
    (against the RFC but universal), raw ISO-2022-JP or raw 8-bit bytes. compat32 splits the
    parameters: it keeps the raw bytes, so we choose the codec, not a strict one."""
    raw = _raw_header(node, header)
    if raw is None:
        return None
    wanted = param.lower()
    for key, text in _decoded_params(raw):
        if key.lower() == wanted:
            return text or None
    return None


def _decoded_params(raw: str) -> list[tuple[str, str]]:
    """Every parameter of a header value, decoded as _param describes."""
    pairs: list[tuple[str, str]] = []
    for item in _parseparam(raw)[1:]:
        key, sep, val = item.partition("=")
        pairs.append((key.strip(), val.strip() if sep else ""))
    decoded: list[tuple[str, str]] = []
    for key, value in email.utils.decode_params([("", ""), *pairs])[1:]:
        if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded as latin-1)
            charset, _lang, text = value
            data = email.utils.unquote(text).encode("latin-1", "surrogateescape")
            decoded.append((key, decode_bytes(data, charset or "utf-8")))
        else:
            text = email.utils.unquote(value)
            decoded.append((key, _decode_header_value(text) if text else ""))
    return decoded


def _disposition(node: email.message.Message) -> str | None:
    raw = _raw_header(node, "content-disposition")
    if not raw:
        return None
    return raw.split(";", 1)[0].strip().lower() or None


def _content_type(node: email.message.Message) -> str:
    try:
        return node.get_content_type()
    except Exception:
        return "application/octet-stream"


def classify(part: Part, parents: tuple[str, ...], third_party_ext: frozenset[str]) -> str:
    """DESIGN §3: which parts are attachments and which are not."""
    ctype = part.content_type
    if ctype.startswith("multipart/"):
        return "container"
    if "multipart/signed" in parents or any(p in _SMIME_TYPES for p in parents) or ctype in _SMIME_TYPES:
        return "smime"
    if ctype == "message/rfc822" or ctype == "message/global":
        return "message"
    if ctype in _REPORT_TYPES:
        return "report"
    attached = part.disposition == "attachment"
    if part.filename and "." in part.filename and \
            part.filename.rsplit(".", 1)[1].strip().lower() in third_party_ext:
        return "third-party-encrypted"
    if ctype.startswith("text/") and not attached:
        return "body"
    if (ctype.startswith("image/") and part.content_id and not attached
            and parents and parents[-1] == "multipart/related"):
        return "inline-image"
    return "attachment"


def walk(msg: email.message.Message, limits: WalkLimits | None = None,
         third_party_ext: frozenset[str] = DEFAULT_THIRD_PARTY_ENCRYPTED) -> ParsedMessage:
    """Every MIME node, depth first, with an explicit stack (no recursion) and bounds."""
    limits = limits or WalkLimits()
    parts: list[Part] = []
    findings: list[tuple[str, str, str]] = []
    truncated = False
    # stack items: (node, path, depth, parent content types, enclosing attached message)
    stack: list[tuple[email.message.Message, str, int, tuple[str, ...], str | None]] = []
    top_children = _children(msg)
    if msg.is_multipart():
        for i in range(len(top_children), 0, -1):
            stack.append((top_children[i - 1], str(i), 1, (_content_type(msg),), None))
    else:
        stack.append((msg, "1", 1, (), None))
    _collect_defects(msg, "message", findings)
    while stack:
        node, path, depth, parents, inside = stack.pop()
        if len(parts) >= limits.max_parts:
            findings.append(("MIME_LIMIT", "message", f"more than {limits.max_parts} parts"))
            truncated = True
            break
        if depth > limits.max_depth:
            findings.append(("MIME_LIMIT", path, f"nesting deeper than {limits.max_depth}"))
            truncated = True
            continue
        part = _make_part(node, path, depth)
        part.inside_message = inside
        part.kind = classify(part, parents, third_party_ext)
        parts.append(part)
        if node is not msg:
            _collect_defects(node, path, findings)
        for symbol, detail in part.notes:
            findings.append((symbol, path, detail))
        ctype = part.content_type
        children = _children(node)
        if not children:
            continue
        if ctype.startswith("message/"):
            inner = children[0]
            inner_parents = (*parents, ctype)
            _collect_defects(inner, path, findings)
            if inner.is_multipart():
                kids = _children(inner)
                for i in range(len(kids), 0, -1):
                    stack.append((kids[i - 1], f"{path}.{i}", depth + 1,
                                  (*inner_parents, _content_type(inner)), path))
            else:
                stack.append((inner, f"{path}.1", depth + 1, inner_parents, path))
        else:
            for i in range(len(children), 0, -1):
                stack.append((children[i - 1], f"{path}.{i}", depth + 1, (*parents, ctype), inside))
    return ParsedMessage(message=msg if isinstance(msg, EmailMessage) else EmailMessage(),
                         parts=parts, findings=findings, truncated=truncated)


def _children(node: email.message.Message) -> list[email.message.Message]:
    payload = node.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, email.message.Message)]
    return []


def _make_part(node: email.message.Message, path: str, depth: int) -> Part:
    part = Part(path=path, content_type=_content_type(node), depth=depth, node=node)
    part.disposition = _disposition(node)
    cid = _raw_header(node, "content-id")
    part.content_id = cid.strip() if cid else None
    try:
        by_filename = _param(node, "content-disposition", "filename")
        by_name = _param(node, "content-type", "name")
    except Exception as exc:  # hostile parameters: record, carry on without a name
        part.notes.append(("FILENAME_UNDECODABLE", type(exc).__name__))
        by_filename = by_name = None
    if by_filename:
        part.filename, part.filename_source = sanitize_filename(by_filename), "filename"
    elif by_name:
        part.filename, part.filename_source = sanitize_filename(by_name), "name"
    if by_filename and by_name and sanitize_filename(by_name) != part.filename:
        part.notes.append(("FILENAME_MISMATCH", f"filename={part.filename!r} name={by_name!r}"))
    return part


def sanitize_filename(name: str) -> str:
    """Keep what the sender wrote for display, minus control characters and directory parts.
    Extension tricks (RLO, trailing dots) are kept visible for the scanner to flag."""
    cleaned = "".join(ch for ch in name if ch >= " " and ch != "\x7f")
    cleaned = cleaned.replace("\\", "/").rsplit("/", 1)[-1]
    return cleaned[:255] if cleaned else "unnamed"


def _collect_defects(node: email.message.Message, target: str,
                     findings: list[tuple[str, str, str]]) -> None:
    defects: list[MessageDefect] = list(getattr(node, "defects", []) or [])
    seen: set[str] = set()
    for defect in defects[:20]:
        name = type(defect).__name__
        if name in seen:
            continue
        seen.add(name)
        findings.append(("MIME_DEFECT", target, name))


_KNOWN_CTE = frozenset({"", "7bit", "8bit", "binary", "base64", "quoted-printable",
                        "x-uuencode", "uuencode", "x-uue"})
# "=" must start "=XX" (two hex digits) or a soft line break; anything else is broken QP,
# which quopri decodes leniently (and so silently).
_BAD_QP = re.compile(r"=(?![0-9A-Fa-f]{2}|[ \t]*\r?\n|[ \t]*$)")


def encoding_findings(part: Part) -> list[tuple[str, str]]:
    """What the body decoding glossed over: unknown transfer encodings, broken
    quoted-printable, and text whose charset is missing, unknown or wrong."""
    found: list[tuple[str, str]] = []
    cte = str(part.node.get("content-transfer-encoding", "") or "").strip().lower()
    if cte not in _KNOWN_CTE:
        found.append(("UNKNOWN_ENCODING", cte[:60]))
    elif cte == "quoted-printable":
        body = part.node.get_payload()
        if isinstance(body, str) and _BAD_QP.search(body):
            found.append(("INVALID_ENCODING", "quoted-printable"))
    if not part.content_type.startswith("text/"):
        return found
    data = part.payload()
    declared = part.charset
    if declared is None:
        if any(b >= 0x80 for b in data[:100_000]):
            found.append(("CHARSET_UNDECLARED", "8-bit text without a charset"))
        return found
    codec = codec_for(declared)
    if codec is None:
        found.append(("CHARSET_UNKNOWN", declared[:60]))
    elif codec != "iso-2022-jp" and b"\x1b$" in data:
        found.append(("CHARSET_MISMATCH", f"ISO-2022-JP text declared as {declared[:40]}"))
    elif codec != "iso-2022-jp":
        try:
            data.decode(codec)
        except UnicodeDecodeError:
            found.append(("CHARSET_MISMATCH", f"does not decode as {declared[:40]}"))
    return found


def parse(raw: bytes, limits: WalkLimits | None = None,
          third_party_ext: frozenset[str] = DEFAULT_THIRD_PARTY_ENCRYPTED) -> ParsedMessage:
    msg, findings = parse_bytes(raw)
    parsed = walk(msg, limits, third_party_ext)
    parsed.findings[:0] = findings
    return parsed
