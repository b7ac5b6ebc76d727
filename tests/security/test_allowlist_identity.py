"""Spam allow-lists trust only an identity a check vouched for (issue 19, item 4).

The attack: a spammer SPF-passes for their own domain and names an allowed address in From
(whose domain publishes no DMARC record), or uses an allowed envelope domain that fails SPF.
Both used to skip the spam filter. Now the envelope sender counts only with SPF pass, and the
From address only with DMARC pass (or, with no DMARC record, an aligned passing DKIM or SPF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dkim
import pytest

from mailmoat.context import Envelope, MessageContext
from mailmoat.runtime import Runtime
from tests.unit.auth.helpers import Key, make_rsa_key
from tests.unit.spam.helpers import LISTED_IP, spam_runtime, tenant_config

STAGES = ("authenticate", "scan", "isolate", "rewrite")
SPF_PASS = f"v=spf1 ip4:{LISTED_IP} -all"


def _mail(from_address: str) -> bytes:
    return (f"From: Boss <{from_address}>\r\nTo: alice@example.test\r\nSubject: wire the money\r\n"
            "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <a1@attacker.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nToday, please.\r\n"
            ).encode()


def _run(runtime: Runtime, raw: bytes, mail_from: str) -> MessageContext:
    # From a DNSBL-listed address: the spam verdict is "spam" unless an allow-list applies.
    envelope = Envelope(client_ip=LISTED_IP, helo="mx.attacker.example", mail_from=mail_from,
                        rcpt_to=["alice@example.test"])
    return runtime.analyse(raw, envelope, stages=STAGES)


def _recipient_allows(runtime: Runtime, sender: str) -> None:
    store = runtime.services.spam
    assert store is not None
    store.allow_sender("alice@example.test", sender, runtime.services.clock.now())


def _runtime(tmp_path: Path, zone: dict[str, Any], allowed: list[str] | None = None) -> Runtime:
    return spam_runtime(tmp_path, tenant_config(action="quarantine", allowed=allowed), zone_extra=zone)


def test_recipient_list_ignores_an_unauthenticated_from(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, {"attacker.example": {"TXT": [SPF_PASS]}})  # bank.example: no DMARC
    _recipient_allows(runtime, "boss@bank.example")
    ctx = _run(runtime, _mail("boss@bank.example"), "spammer@attacker.example")
    assert ctx.auth.spf == "pass" and ctx.auth.dmarc == "none"
    assert ctx.spam.verdict == "spam"
    assert ctx.spam.recipients == {"alice@example.test": "quarantine"}


def test_tenant_list_ignores_an_envelope_sender_that_failed_spf(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, {"bank.example": {"TXT": ["v=spf1 -all"]}}, allowed=["@bank.example"])
    ctx = _run(runtime, _mail("boss@bank.example"), "boss@bank.example")
    assert ctx.auth.spf == "fail"
    assert not ctx.has("ALLOWED_SENDER")
    assert ctx.spam.recipients == {"alice@example.test": "quarantine"}


def test_tenant_list_ignores_a_softfail_or_neutral_envelope(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, {"bank.example": {"TXT": ["v=spf1 ?all"]}}, allowed=["@bank.example"])
    ctx = _run(runtime, _mail("someone@attacker.example"), "boss@bank.example")
    assert ctx.auth.spf == "neutral"
    assert not ctx.has("ALLOWED_SENDER")


def test_an_spf_passing_envelope_sender_is_allowed(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, {"bank.example": {"TXT": [SPF_PASS]}}, allowed=["@bank.example"])
    ctx = _run(runtime, _mail("boss@bank.example"), "boss@bank.example")
    assert ctx.has("ALLOWED_SENDER")
    assert ctx.spam.recipients == {"alice@example.test": "allowed"}


@pytest.fixture(scope="module")
def bank_key() -> Key:
    return make_rsa_key()


def test_a_from_with_an_aligned_dkim_pass_is_allowed_without_a_dmarc_record(
        tmp_path: Path, bank_key: Key) -> None:
    zone = {"attacker.example": {"TXT": [SPF_PASS]},
            "k1._domainkey.bank.example": {"TXT": [bank_key.record]}}
    runtime = _runtime(tmp_path, zone)
    _recipient_allows(runtime, "boss@bank.example")
    raw = _mail("boss@bank.example")
    signed = dkim.sign(raw, b"k1", b"bank.example", bank_key.private, include_headers=[b"from", b"subject"]) + raw
    ctx = _run(runtime, signed, "bounces@mailer.example")
    assert ctx.auth.dkim == "pass" and ctx.auth.dmarc == "none"
    assert ctx.spam.recipients == {"alice@example.test": "allowed"}


def test_a_from_signed_by_another_domain_is_not_allowed(tmp_path: Path, bank_key: Key) -> None:
    zone = {"attacker.example": {"TXT": [SPF_PASS]},
            "k1._domainkey.attacker.example": {"TXT": [bank_key.record]}}
    runtime = _runtime(tmp_path, zone)
    _recipient_allows(runtime, "boss@bank.example")
    raw = _mail("boss@bank.example")
    signed = dkim.sign(raw, b"k1", b"attacker.example", bank_key.private, include_headers=[b"from"]) + raw
    ctx = _run(runtime, signed, "spammer@attacker.example")
    assert ctx.auth.dkim == "pass"
    assert ctx.spam.recipients == {"alice@example.test": "quarantine"}


def test_several_from_addresses_are_not_allowed(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, {"bank.example": {"TXT": [SPF_PASS]}})
    _recipient_allows(runtime, "boss@bank.example")
    raw = _mail("boss@bank.example").replace(b"From: Boss <boss@bank.example>",
                                              b"From: boss@bank.example, ceo@attacker.example")
    ctx = _run(runtime, raw, "")
    assert ctx.spam.recipients == {"alice@example.test": "quarantine"}
