"""Carry out body actions (HTML→text, defang, banner) on a fresh MIME tree; S/MIME stays intact."""

from __future__ import annotations

import base64
import io
import secrets
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage, Message

from mailmoat.message import PARSE_POLICY, WalkLimits, parse_bytes, walk
from mailmoat.rewrite import bodytext
from mailmoat.rewrite.banner import Banner, insert_html_banner
from mailmoat.rewrite.defang import KeepLink, defang_html, defang_text
from mailmoat.rewrite.headers import RawMessage
from mailmoat.rewrite.html2text import html_to_text
from mailmoat.rewrite.htmldoc import HtmlDoc, parse_html, serialize_html, set_declared_charset

_SIGNED_TOP = frozenset({"multipart/signed", "application/pkcs7-mime", "application/x-pkcs7-mime"})
_TEXT_KINDS = frozenset({"text/plain", "text/html"})


class RewriteLimitError(RuntimeError):
    """The message is too large or deep to rewrite completely; the stage holds it."""


@dataclass(slots=True)
class BodyPlan:
    banner: Banner | None = None
    defang: bool = False
    html_to_text: bool = False
    keep_link: KeepLink = lambda _url: False  # links that stay alive (our portal's)

    @property
    def empty(self) -> bool:
        return self.banner is None and not self.defang and not self.html_to_text


@dataclass(slots=True)
class BodyOutcome:
    data: bytes | None  # None: the body needs no change (the caller keeps the bytes it has)
    done: list[str] = field(default_factory=list)  # actions actually carried out


def is_signed_or_encrypted(raw: bytes) -> bool:
    """Whether the top-level entity is S/MIME (signed or enveloped), never to be modified."""
    msg, _ = parse_bytes(_header_only(raw))
    return msg.get_content_type() in _SIGNED_TOP


def _header_only(raw: bytes) -> bytes:
    message = RawMessage.split(raw)
    return b"".join(message.fields) + message.linesep


def rewrite_body(raw: bytes, plan: BodyPlan, limits: WalkLimits) -> BodyOutcome:
    if plan.empty:
        return BodyOutcome(None)
    linesep = RawMessage.split(raw).linesep
    if is_signed_or_encrypted(raw):
        if plan.banner is None:
            return BodyOutcome(None)
        return BodyOutcome(wrap_with_banner(raw, plan.banner), ["banner"])
    msg, _ = parse_bytes(raw)
    parsed = walk(msg, limits)
    if parsed.truncated:
        # Parts past the walk's bounds would keep live links or miss the banner.
        raise RewriteLimitError("MIME tree beyond the walk limits; not rewritten partially")
    done: list[str] = []
    for part in parsed.parts:
        if part.kind != "body" or part.content_type not in _TEXT_KINDS:
            continue
        node = part.node
        ctype = part.content_type
        # Attached messages keep their own look; the banner belongs to the message we deliver.
        banner = plan.banner if part.inside_message is None else None
        if banner is None and not plan.defang and not (plan.html_to_text and ctype == "text/html"):
            continue
        html_doc: HtmlDoc | None = None
        text: str | None = None
        if ctype == "text/html":
            html_doc = parse_html(bodytext.read_text(node))
            if plan.html_to_text:
                text = html_to_text(html_doc.root)
                html_doc = None
                node.set_type("text/plain")
                _add(done, "html-to-text")
        if plan.defang:
            if html_doc is not None:
                defang_html(html_doc.root, plan.keep_link)
            else:
                text = defang_text(text if text is not None else bodytext.read_text(node),
                                   plan.keep_link)
            _add(done, "defang")
        if html_doc is not None:
            if banner is not None:
                insert_html_banner(html_doc, banner)
                _add(done, "banner")
            write_html(node, html_doc)
            continue
        if text is None:
            if banner is not None:
                bodytext.prepend_text(node, banner.text)  # keeps the original bytes as sent
                _add(done, "banner")
            continue
        if banner is not None:
            text = banner.text.replace("\n", "\r\n" if "\r\n" in text else "\n") + text
            _add(done, "banner")
        bodytext.write_text(node, text)
    data = serialize_tree(raw, msg, linesep) if done else None
    if plan.banner is not None and "banner" not in done:
        # No readable body part to put it in (only attachments, or an empty message): the
        # banner becomes a first part of its own, as for S/MIME.
        data = wrap_with_banner(data if data is not None else raw, plan.banner)
        done.append("banner")
    return BodyOutcome(data, done)


def _add(done: list[str], action: str) -> None:
    if action not in done:
        done.append(action)


def write_html(node: Message, doc: HtmlDoc) -> None:
    declared = bodytext.declared_charset(node)
    charset = declared if declared is not None and bodytext.can_write(declared) else "utf-8"
    set_declared_charset(doc.root, charset)
    data, charset = bodytext.encode_text(serialize_html(doc), charset, html=True)
    bodytext.write_bytes(node, data, charset)


def serialize_tree(raw: bytes, msg: EmailMessage, linesep: bytes) -> bytes:
    """The original top-level header fields byte for byte (they are what DKIM/ARC and the
    reader see), with the MIME headers and the body from the rewritten tree."""
    buffer = io.BytesIO()
    # refold_source="none": fields we did not touch are written as they came (S/MIME entity
    # headers included); only fields we set are folded.
    # The generator reads the tree's headers through its own policy: the parser's, so a
    # parameter the stdlib cannot decode (ISO-2022-JP with NEC characters) does not raise here.
    gen_policy = PARSE_POLICY.clone(linesep=linesep.decode("ascii"), refold_source="none")
    BytesGenerator(buffer, mangle_from_=False, policy=gen_policy).flatten(msg)
    generated = RawMessage.split(buffer.getvalue())
    original = RawMessage.split(raw)
    original.fields = [f for f in original.fields if not _is_mime_field(f)]
    mime_fields = [f for f in generated.fields if _is_mime_field(f)]
    if not any(RawMessage.name_of(f) == b"mime-version" for f in mime_fields):
        mime_fields.insert(0, b"MIME-Version: 1.0" + linesep)
    return b"".join(original.fields) + b"".join(mime_fields) + generated.rest


def _is_mime_field(field_bytes: bytes) -> bool:
    name = RawMessage.name_of(field_bytes)
    return name.startswith(b"content-") or name == b"mime-version"


def wrap_with_banner(raw: bytes, banner: Banner) -> bytes:
    """A multipart/mixed around the untouched entity (S/MIME, or a message without a body
    part), the banner as a new first part. The entity (its Content-* fields and body) is
    copied byte for byte."""
    original = RawMessage.split(raw)
    ls = original.linesep
    entity_fields = [f for f in original.fields if RawMessage.name_of(f).startswith(b"content-")]
    outer_fields = [f for f in original.fields if not RawMessage.name_of(f).startswith(b"content-")]
    entity = b"".join(entity_fields) + original.rest
    boundary = f"mailmoat-{secrets.token_hex(12)}".encode("ascii")
    while boundary in entity:  # pragma: no cover - 96 random bits
        boundary = f"mailmoat-{secrets.token_hex(12)}".encode("ascii")
    if not any(RawMessage.name_of(f) == b"mime-version" for f in outer_fields):
        outer_fields.append(b"MIME-Version: 1.0" + ls)
    outer_fields.append(b'Content-Type: multipart/mixed; boundary="' + boundary + b'"' + ls)
    banner_data = banner.text.encode("utf-8")
    encoded = base64.encodebytes(banner_data.replace(b"\n", b"\r\n")).replace(b"\n", ls)
    parts = [
        ls,  # blank line ending the header block
        b"--" + boundary + ls,
        b'Content-Type: text/plain; charset="utf-8"' + ls,
        b"Content-Transfer-Encoding: base64" + ls,
        ls,
        encoded,
        b"--" + boundary + ls,
        entity + ls,  # this line break belongs to the delimiter, so the entity stays exact
        b"--" + boundary + b"--" + ls,
    ]
    return b"".join(outer_fields) + b"".join(parts)


# The isolate stage imported these under their first names.
_serialize = serialize_tree
_write_html = write_html
