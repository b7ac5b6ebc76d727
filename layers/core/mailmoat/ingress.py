"""What ingress decides before any stage runs: which tenant each recipient belongs to, and the
envelope of a message that was stored by someone else (SES) without one."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from mailmoat.context import Envelope
from mailmoat.ports import Directory


@dataclass(frozen=True, slots=True)
class TenantShare:
    """The recipients of one envelope that belong to one tenant (None: to no tenant we know)."""

    tenant: str | None
    recipients: tuple[str, ...]


def tenant_of(directory: Directory, address: str) -> str | None:
    """The tenant a recipient (or one of its aliases) is registered with, else the one whose
    domain it is in."""
    recipient = directory.recipient(address)
    if recipient is not None:
        return recipient.tenant
    return directory.tenant_for_domain(address.rpartition("@")[2].lower())


def split_by_tenant(directory: Directory, recipients: Iterable[str]) -> list[TenantShare]:
    """One share per tenant, in the order each tenant's first recipient was named (DESIGN §1
    "One message per tenant"): no tenant's policy, admin or notice sees another's recipients."""
    groups: dict[str | None, list[str]] = {}
    for address in recipients:
        groups.setdefault(tenant_of(directory, address), []).append(address)
    return [TenantShare(tenant, tuple(dict.fromkeys(addrs))) for tenant, addrs in groups.items()]


# SES's own Received header names the envelope recipient: "... with SMTP id X for a@b.example;"
_SES_FOR = re.compile(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+?)>?\s*;", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    envelope: Envelope
    # Why no recipient was found: "unknown recipient x" (dropped) or a reason to hold.
    refused: str | None = None
    dropped: bool = False


def stored_envelope(raw: bytes, named: Iterable[str], directory: Directory) -> StoredEnvelope:
    """The envelope of a message stored without one (SES's S3 action): client IP and HELO from
    the topmost Received, MAIL FROM from Return-Path, recipients from the event when it named
    them, else from SES's Received header, else the registered addresses among To / Cc (a Bcc
    recipient is only known from an event that carries the envelope)."""
    from mailmoat.auth.received import envelope_from_message

    msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    envelope = envelope_from_message(raw, Envelope(rcpt_to=[r.lower() for r in named]))
    if envelope.rcpt_to:
        return StoredEnvelope(envelope)
    received = msg.get_all("Received") or []
    match = _SES_FOR.search(" ".join(str(received[0]).split())) if received else None
    if match:
        # The envelope recipient, named by SES: that one only. An address we do not know got
        # past the recipient conditions and is dropped (DESIGN §1), never redirected to a
        # registered address that merely appears in To.
        address = match.group(1).lower()
        if directory.recipient(address) is not None:
            envelope.rcpt_to = [address]
            return StoredEnvelope(envelope)
        return StoredEnvelope(envelope, f"unknown recipient {address}"[:300], dropped=True)
    values = [str(v) for name in ("To", "Cc") for v in (msg.get_all(name) or [])]
    found = [a.lower() for _, a in getaddresses(values) if a and directory.recipient(a) is not None]
    envelope.rcpt_to = list(dict.fromkeys(found))
    if envelope.rcpt_to:
        return StoredEnvelope(envelope)
    return StoredEnvelope(envelope, "no registered recipient found in the stored message")
