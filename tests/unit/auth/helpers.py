"""Helpers for the auth tests: DKIM keys, messages signed with dkimpy, Received lines."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import dkim
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailmoat.adapters.dns import ZoneFileResolver

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


@dataclass(frozen=True)
class Key:
    algorithm: bytes  # b"rsa-sha256" | b"ed25519-sha256"
    private: bytes  # what dkim.sign wants
    record: str  # the TXT record to publish at <selector>._domainkey.<domain>


def make_rsa_key() -> Key:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return Key(b"rsa-sha256", private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")


def make_ed25519_key() -> Key:
    signing = nacl.signing.SigningKey.generate()
    private = base64.b64encode(bytes(signing))
    public = base64.b64encode(bytes(signing.verify_key)).decode()
    return Key(b"ed25519-sha256", private, f"v=DKIM1; k=ed25519; p={public}")


def message(*, from_addr: str = "Alice <alice@sender.example>",
            to: str = "bob@example.test", subject: str = "Quarterly report",
            body: str = "Please read https://sender.example/report before Friday.\r\n",
            extra: list[str] | None = None) -> bytes:
    head = [f"From: {from_addr}", f"To: {to}", f"Subject: {subject}",
            "Date: Fri, 27 Nov 2026 10:00:00 +0000", "Message-ID: <m1@sender.example>",
            "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join([*(extra or []), *head]) + "\r\n\r\n" + body).encode()


def sign(raw: bytes, key: Key, domain: str, selector: str = "s1") -> bytes:
    """raw with a DKIM-Signature (made by dkimpy) prepended."""
    header: bytes = dkim.sign(raw, selector.encode(), domain.encode(), key.private,
                       signature_algorithm=key.algorithm, include_headers=SIGNED_HEADERS)
    return header + raw


def received(ip: str, helo: str = "mail.sender.example",
             by: str = "mx.example.test") -> bytes:
    return (f"Received: from {helo} ({helo} [{ip}])\r\n\tby {by} (Postfix) with ESMTPS "
            f"id 4AB12; Fri, 27 Nov 2026 10:00:01 +0000\r\n").encode()


def resolver(zone: dict[str, Any]) -> ZoneFileResolver:
    return ZoneFileResolver(zone)
