"""ARC chain validation with dkimpy through our Resolver: a sealed message, a broken one, none."""

from __future__ import annotations

import dkim as dkimpy

from mailmoat.auth import arc
from tests.unit.auth.helpers import Key, message, resolver


def seal(raw: bytes, key: Key, domain: str = "relay.example") -> bytes:
    # An ARC sealer seals what its own Authentication-Results said (RFC 8617 §5.1).
    raw = (f"Authentication-Results: {domain}; spf=pass smtp.mailfrom=sender.example\r\n"
           .encode() + raw)
    headers = dkimpy.arc_sign(raw, b"arc", domain.encode(), key.private, domain.encode())
    return b"".join(headers) + raw


def test_valid_chain_passes(rsa_key: Key) -> None:
    zone = {"arc._domainkey.relay.example": {"TXT": [rsa_key.record]}}
    got = arc.verify_chain(seal(message(), rsa_key), resolver(zone))
    assert (got.result, got.instances) == ("pass", 1)


def test_modified_after_sealing_fails(rsa_key: Key) -> None:
    zone = {"arc._domainkey.relay.example": {"TXT": [rsa_key.record]}}
    raw = seal(message(), rsa_key).replace(b"Friday", b"Monday")
    assert arc.verify_chain(raw, resolver(zone)).result == "fail"


def test_unknown_key_fails(rsa_key: Key) -> None:
    assert arc.verify_chain(seal(message(), rsa_key), resolver({})).result == "fail"


def test_no_chain_is_none() -> None:
    assert arc.verify_chain(message(), resolver({})).result == "none"


def test_too_many_sets_fail_without_lookups() -> None:
    seals = [f"ARC-Seal: i={i}; cv=pass; a=rsa-sha256; d=x; s=y; b=AAAA" for i in range(60)]
    got = arc.verify_chain(message(extra=seals), resolver({}))
    assert (got.result, got.instances) == ("fail", 60)
