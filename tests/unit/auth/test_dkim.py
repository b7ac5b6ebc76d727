"""DKIM: every signature verified through our Resolver, RSA and Ed25519, per-signature results."""

from __future__ import annotations

from typing import Any

import pytest

from mailmoat.auth import dkim
from tests.unit.auth.helpers import Key, message, resolver, sign


def published(key: Key, domain: str = "sender.example") -> dict[str, Any]:
    return {f"s1._domainkey.{domain}": {"TXT": [key.record]}}


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize(("change", "zone_change", "result"), [
    (None, None, "pass"),
    ("body", None, "fail"),
    ("subject", None, "fail"),
    (None, "missing", "permerror"),
    (None, "timeout", "temperror"),
    (None, "garbage", "permerror"),
])
def test_signature_results(algorithm: str, change: str | None, zone_change: str | None,
                           result: str, rsa_key: Key, ed25519_key: Key) -> None:
    key = rsa_key if algorithm == "rsa" else ed25519_key
    raw = sign(message(), key, "sender.example")
    if change == "body":
        raw = raw.replace(b"Friday", b"Monday")
    if change == "subject":
        raw = raw.replace(b"Quarterly report", b"Urgent: invoice")
    zone = published(key)
    if zone_change == "missing":
        zone = {}
    elif zone_change == "timeout":
        zone["s1._domainkey.sender.example"] = {"TXT": "TIMEOUT"}
    elif zone_change == "garbage":
        zone["s1._domainkey.sender.example"] = {"TXT": ["v=DKIM1; k=rsa; p=bm90IGEga2V5"]}
    got = dkim.verify_all(raw, resolver(zone))
    assert got.result == result
    (sig,) = got.signatures
    assert (sig.result, sig.domain, sig.selector) == (result, "sender.example", "s1")
    assert sig.algorithm == key.algorithm.decode()


def test_key_behind_cname(rsa_key: Key) -> None:
    zone = {"s1._domainkey.sender.example": {"CNAME": ["k.esp.example"]},
            "k.esp.example": {"TXT": [rsa_key.record]}}
    raw = sign(message(), rsa_key, "sender.example")
    assert dkim.verify_all(raw, resolver(zone)).result == "pass"


def test_results_per_signature_and_aggregate(rsa_key: Key, ed25519_key: Key) -> None:
    raw = sign(sign(message(), ed25519_key, "sender.example"), rsa_key, "esp.example")
    zone = {**published(ed25519_key), **published(rsa_key, "esp.example")}
    got = dkim.verify_all(raw, resolver(zone))
    assert [(s.domain, s.result) for s in got.signatures] == [
        ("esp.example", "pass"), ("sender.example", "pass")]
    assert got.passing_domains == ["esp.example", "sender.example"]
    broken = dkim.verify_all(raw.replace(b"Friday", b"Monday"), resolver(zone))
    assert [s.result for s in broken.signatures] == ["fail", "fail"] and broken.result == "fail"


@pytest.mark.parametrize(("results", "word"), [
    ([], "none"), (["pass", "fail"], "pass"), (["fail", "permerror"], "fail"),
    (["temperror", "permerror"], "temperror"), (["permerror"], "permerror"),
])
def test_aggregate(results: list[str], word: str) -> None:
    assert dkim.aggregate(results) == word


def test_bounded_and_never_raises() -> None:
    sigs = [f"DKIM-Signature: v=1; a=rsa-sha256; d=x{i}.example; s=s; h=from; bh=; b="
            for i in range(15)]
    got = dkim.verify_all(message(extra=sigs), resolver({}))
    assert got.total == 15 and len(got.signatures) == dkim.MAX_SIGNATURES
    assert {s.result for s in got.signatures} == {"permerror"}
    assert dkim.verify_all(b"\tcontinuation first\r\n\r\nbody", resolver({})).result in (
        "none", "permerror")
    assert dkim.verify_all(message(), resolver({})).result == "none"


def test_body_length_limit_is_reported(rsa_key: Key) -> None:
    raw = message()
    header = dkim_sign_with_length(raw, rsa_key)
    appended = header + raw + b"Log in now at https://evil.example\r\n"
    got = dkim.verify_all(appended, resolver(published(rsa_key)))
    (sig,) = got.signatures
    assert sig.result == "pass" and sig.partial_body
    whole = dkim.verify_all(header + raw, resolver(published(rsa_key)))
    assert not whole.signatures[0].partial_body


def dkim_sign_with_length(raw: bytes, key: Key) -> bytes:
    import dkim as dkimpy

    from tests.unit.auth.helpers import SIGNED_HEADERS

    header: bytes = dkimpy.sign(raw, b"s1", b"sender.example", key.private,
                                include_headers=SIGNED_HEADERS, length=True)
    return header
