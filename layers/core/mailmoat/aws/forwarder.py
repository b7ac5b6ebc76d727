"""Forwarder semantics for SES delivery (DESIGN §1): our verified From, the sender kept in
Reply-To / X-Original-From, the sender's DKIM signatures removed, our ARC headers kept."""

from __future__ import annotations

from email.header import decode_header, make_header
from email.utils import formataddr, getaddresses

from mailmoat.rewrite.headers import RawMessage

# SES sends only from verified identities in From, Sender and Return-Path; a DKIM signature
# over the old From would fail at the mailbox and only adds noise next to our ARC seal.
_DROPPED = frozenset({b"from", b"sender", b"return-path", b"dkim-signature", b"x-original-from"})
_MAX_NAME = 200


def relay_address(identity: str) -> str:
    """The From address for a verified SES identity: an address as it is, a domain → relay@."""
    identity = identity.strip()
    if not identity:
        raise ValueError("no relay identity configured (RelayIdentity)")
    return identity if "@" in identity else f"relay@{identity}"


def routing_address(recipient: str, routing_domain: str | None) -> str:
    """user@tenant.example → user@<routing_domain> (e.g. tenant.onmicrosoft.com)."""
    if not routing_domain:
        return recipient
    local = recipient.rpartition("@")[0] or recipient
    return f"{local}@{routing_domain.strip().rstrip('.')}"


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _already_forwarded(message: RawMessage, relay: str) -> bool:
    names = [RawMessage.name_of(f) for f in message.fields]
    if b"x-original-from" not in names:
        return False
    first_from = next((f for f in message.fields if RawMessage.name_of(f) == b"from"), b"")
    pairs = getaddresses([RawMessage.value_of(first_from)])
    return bool(pairs) and pairs[0][1].lower() == relay.lower()


def forwarded(data: bytes, relay: str) -> bytes:
    """The message as SES may send it: From becomes `"Name (orig@example.com)" <relay>`."""
    message = RawMessage.split(data)
    if _already_forwarded(message, relay):
        return data  # rewritten before the ARC seal (AwsRuntime): sealed as it is, send as it is
    original: bytes | None = None
    has_reply_to = False
    for field in message.fields:
        field_name = RawMessage.name_of(field)
        if field_name == b"from" and original is None:
            original = field.split(b":", 1)[1]
        elif field_name == b"reply-to":
            has_reply_to = True
    message.remove(lambda field_name, _value: field_name in _DROPPED)
    lines: list[str] = []
    if original is None:
        lines.append(f"From: {formataddr(('', relay))}")
    else:
        text = " ".join(original.decode("utf-8", "surrogateescape").split())
        pairs = [(n, a) for n, a in getaddresses([text]) if a]
        name, address = pairs[0] if pairs else ("", "")
        name = " ".join(_decoded(name).split())[:_MAX_NAME]
        shown = f"{name} ({address})" if name and address else (address or name or "unknown sender")
        lines.append(f"From: {formataddr((shown, relay), charset='utf-8')}")
        if address and not has_reply_to:
            lines.append(f"Reply-To: {formataddr((name, address), charset='utf-8')}")
    message.prepend(lines)
    if original is not None:
        # The sender's own header value, byte for byte (it may carry encoded words).
        message.fields.insert(len(lines), b"X-Original-From:" + original.rstrip(b"\r\n")
                              + message.linesep)
    return message.to_bytes()
