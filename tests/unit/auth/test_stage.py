"""The authenticate stage through the real runtime: DESIGN §5 acceptance, route, hostile input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from mailmoat.adapters.geoip import GeoIp2Reader
from mailmoat.context import Disposition, MessageContext
from tests.unit.auth.helpers import Key, message, received, sign

SPF = "v=spf1 ip4:203.0.113.0/24 -all"
GOOD_IP = "203.0.113.5"  # allowed by sender.example and esp.example SPF
BAD_IP = "198.51.100.9"  # allowed by nobody


def zone(dmarc: str | None = "v=DMARC1; p=reject", **keys: Key) -> dict[str, Any]:
    """sender.example (the From domain) and esp.example (a third party) with SPF, DMARC
    for sender.example, and DKIM keys published as selector s1 under the given domains."""
    z: dict[str, Any] = {
        "sender.example": {"TXT": [SPF], "MX": ["10 mail.sender.example"]},
        "esp.example": {"TXT": [SPF]},
    }
    if dmarc:
        z["_dmarc.sender.example"] = {"TXT": [dmarc]}
    for domain, key in keys.items():
        z[f"s1._domainkey.{domain.replace('_', '.')}"] = {"TXT": [key.record]}
    return z


def tampered(raw: bytes) -> bytes:
    return raw.replace(b"before Friday", b"before Monday, log in at https://evil.example")


# (case, build(rsa, ed) -> (raw, zone), envelope, spf, dkim, dmarc, policy, warn, defang, symbols)
CASES: list[tuple[str, Callable[[Key, Key], tuple[bytes, dict[str, Any]]], dict[str, str],
                  str, str, str, str | None, bool, bool, set[str]]] = [
    ("all pass",
     lambda k, e: (sign(message(), k, "sender.example"), zone(sender_example=k)),
     {"client_ip": GOOD_IP, "helo": "mail.sender.example", "mail_from": "alice@sender.example"},
     "pass", "pass", "pass", "reject", False, False, set()),
    ("spf fail, dmarc p=reject",
     lambda k, e: (message(), zone()),
     {"client_ip": BAD_IP, "helo": "bad.example", "mail_from": "alice@sender.example"},
     "fail", "none", "fail", "reject", True, True, {"SPF_FAIL", "DMARC_FAIL"}),
    ("dmarc the only failure, p=none",
     lambda k, e: (message(), zone("v=DMARC1; p=none; rua=mailto:d@sender.example")),
     {"client_ip": GOOD_IP, "helo": "mta.esp.example", "mail_from": "bounce@esp.example"},
     "pass", "none", "fail", "none", True, False, {"DMARC_FAIL"}),
    ("dmarc fail, p=quarantine",
     lambda k, e: (message(), zone("v=DMARC1; p=quarantine")),
     {"client_ip": GOOD_IP, "helo": "mta.esp.example", "mail_from": "bounce@esp.example"},
     "pass", "none", "fail", "quarantine", True, True, {"DMARC_FAIL"}),
    ("dkim body tampered",
     lambda k, e: (tampered(sign(message(), k, "sender.example")), zone(sender_example=k)),
     {"client_ip": GOOD_IP, "helo": "mail.sender.example", "mail_from": "alice@sender.example"},
     "pass", "fail", "pass", "reject", True, True, {"DKIM_FAIL"}),
    ("ed25519 pass: dmarc passes by dkim, spf fail still warns",
     lambda k, e: (sign(message(), e, "sender.example"), zone(sender_example=e)),
     {"client_ip": BAD_IP, "helo": "mail.sender.example", "mail_from": "alice@sender.example"},
     "fail", "pass", "pass", "reject", True, True, {"SPF_FAIL"}),
    ("dkim and spf pass, neither aligned",
     lambda k, e: (sign(message(), k, "esp.example"), zone(esp_example=k)),
     {"client_ip": GOOD_IP, "helo": "mta.esp.example", "mail_from": "bounce@esp.example"},
     "pass", "pass", "fail", "reject", True, True, {"DMARC_FAIL"}),
]


@pytest.mark.parametrize(
    ("case", "build", "envelope", "spf", "dkim", "dmarc", "policy", "warn", "defang", "symbols"),
    CASES, ids=[c[0] for c in CASES])
def test_design_5_acceptance(case: str, build: Any, envelope: dict[str, str], spf: str,
                             dkim: str, dmarc: str, policy: str | None, warn: bool,
                             defang: bool, symbols: set[str], rsa_key: Key, ed25519_key: Key,
                             analyse: Callable[..., MessageContext]) -> None:
    raw, z = build(rsa_key, ed25519_key)
    ctx = analyse(raw, z, **envelope)
    report = ctx.to_report()["auth"]
    assert (report["spf"], report["dkim"], report["dmarc"], report["dmarc_policy"]) == (
        spf, dkim, dmarc, policy)
    assert (report["warn"], report["defang"]) == (warn, defang)
    found = {f.symbol for f in ctx.findings}
    assert symbols <= found
    auth_symbols = {s for s in found if s.startswith(("SPF_", "DKIM_", "DMARC_"))}
    assert auth_symbols == symbols
    # policy.py (isolate stage) turns the flags into actions for the rewrite stage
    assert ("banner" in ctx.actions) == warn
    assert ("defang" in ctx.actions) == defang
    assert ctx.disposition == Disposition.DELIVER


def test_ed25519_signature_details(ed25519_key: Key,
                                   analyse: Callable[..., MessageContext]) -> None:
    raw = sign(message(), ed25519_key, "sender.example")
    ctx = analyse(raw, zone(sender_example=ed25519_key), client_ip=GOOD_IP,
                  helo="mail.sender.example", mail_from="alice@sender.example")
    (sig,) = ctx.auth.details["dkim"]
    assert sig["algorithm"] == "ed25519-sha256"
    assert (sig["domain"], sig["selector"], sig["result"]) == ("sender.example", "s1", "pass")
    assert ctx.auth.details["dmarc"]["dkim_aligned"] is True


def test_every_signature_is_verified_and_one_pass_is_enough(
        rsa_key: Key, ed25519_key: Key, analyse: Callable[..., MessageContext]) -> None:
    # a mailing list's extra signature with a key nobody published does not undo the pass
    raw = sign(sign(message(), ed25519_key, "sender.example"), rsa_key, "list.example")
    ctx = analyse(raw, zone(sender_example=ed25519_key), client_ip=GOOD_IP,
                  helo="mail.sender.example", mail_from="alice@sender.example")
    results = [(s["domain"], s["result"]) for s in ctx.auth.details["dkim"]]
    assert results == [("list.example", "permerror"), ("sender.example", "pass")]
    assert ctx.auth.dkim == "pass" and not ctx.auth.warn
    assert ctx.auth.details["dkim_domain"] == "sender.example"  # header.d for our A-R


def test_envelope_taken_from_received_and_return_path(
        rsa_key: Key, analyse: Callable[..., MessageContext]) -> None:
    raw = (b"Return-Path: <alice@sender.example>\r\n" + received(GOOD_IP)
           + received("10.1.2.3", helo="relay.internal", by="mail.sender.example")
           + message())
    ctx = analyse(raw, zone())
    assert (ctx.envelope.client_ip, ctx.envelope.helo, ctx.envelope.mail_from) == (
        GOOD_IP, "mail.sender.example", "alice@sender.example")
    assert ctx.auth.details["envelope_source"] == "headers"
    assert (ctx.auth.spf, ctx.auth.dmarc) == ("pass", "pass")


def test_smtp_envelope_wins_over_headers(analyse: Callable[..., MessageContext]) -> None:
    raw = b"Return-Path: <alice@sender.example>\r\n" + received(GOOD_IP) + message()
    ctx = analyse(raw, zone(), client_ip=BAD_IP, helo="bad.example",
                  mail_from="alice@sender.example")
    assert ctx.envelope.client_ip == BAD_IP and ctx.auth.spf == "fail"


def test_spf_temperror_on_dns_timeout(analyse: Callable[..., MessageContext]) -> None:
    z = {"sender.example": {"TXT": "TIMEOUT"}}
    ctx = analyse(message(), z, client_ip=GOOD_IP, helo="mail.sender.example",
                  mail_from="alice@sender.example")
    assert ctx.auth.spf == "temperror" and ctx.has("SPF_TEMPERROR")
    assert ctx.auth.dmarc == "none" and not ctx.auth.warn


def test_dmarc_temperror_on_dns_timeout(analyse: Callable[..., MessageContext]) -> None:
    z = zone(None)
    z["_dmarc.sender.example"] = {"TXT": "TIMEOUT"}
    ctx = analyse(message(), z, client_ip=BAD_IP, helo="x.example",
                  mail_from="alice@sender.example")
    assert ctx.auth.dmarc == "temperror" and ctx.has("DMARC_TEMPERROR")


def write_mmdb(path: Path, networks: dict[str, str]) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for network, country in networks.items():
        writer.insert_network(IPSet([network]), {"country": {"iso_code": country}})
    writer.to_db_file(str(path))
    return path


def test_route_hops_with_countries(tmp_path: Path, make_runtime: Any) -> None:
    mmdb = write_mmdb(tmp_path / "country.mmdb", {"203.0.113.0/24": "JP",
                                                   "2001:db8:1::/48": "DE",
                                                   "10.0.0.0/8": "US"})
    raw = (received("10.9.9.9", helo="edge.example.test", by="mx.example.test")
           + received(GOOD_IP, by="edge.example.test")
           + b"Received: from [IPv6:2001:db8:1::25] (helo=origin.example) by mail.sender.example"
             b" with esmtp id 1; Fri, 27 Nov 2026 09:59:00 +0000\r\n"
           + b"Received: by origin.example (Postfix, from userid 0) id 7; Fri\r\n"
           + message())
    runtime = make_runtime(zone())
    runtime.services.geoip = GeoIp2Reader(mmdb)
    from mailmoat.context import Envelope

    ctx = runtime.analyse(raw, Envelope(rcpt_to=["bob@example.test"]), stages=("authenticate",))
    route = [(h["ip"], h["country"]) for h in ctx.to_report()["route"]]
    # private 10/8 is never looked up, even though the database (wrongly) has it
    assert route == [("10.9.9.9", None), (GOOD_IP, "JP"), ("2001:db8:1::25", "DE"), (None, None)]
    assert ctx.route[1].from_name == "mail.sender.example"
    assert ctx.route[1].by_name == "edge.example.test"
    assert ctx.has("ROUTE_MULTIPLE_COUNTRIES")
    # the internal hop is skipped: the client is the first public one below it
    assert ctx.envelope.client_ip == GOOD_IP


def test_hostile_headers_become_findings_not_exceptions(
        analyse: Callable[..., MessageContext]) -> None:
    garbage_sigs = [f"DKIM-Signature: v=1; a=rsa-sha256; d=x{i}.example; s=; b===; h"
                    for i in range(12)]
    many_received = [f"Received: from ((([{i}.{i}.{i}.{i}]]] by ;;;" for i in range(60)]
    raw = message(from_addr="a@one.example, b@two.example, =?x?q?bad?= <@>",
                  extra=[*many_received, *garbage_sigs,
                         "ARC-Seal: i=1; cv=none; a=rsa-sha256; d=x; s=y; b=AAAA",
                         "Authentication-Results: amazonses.com; spf=pass; dkim=fail"])
    ctx = analyse(raw, {}, stages=("authenticate",))
    assert ctx.disposition == Disposition.DELIVER
    assert [t.outcome for t in ctx.trace] == ["ok", "ok"]
    assert {"RECEIVED_LIMIT", "DKIM_LIMIT", "FROM_MULTIPLE"} <= {f.symbol for f in ctx.findings}
    assert len(ctx.route) == 50
    assert len(ctx.auth.details["dkim"]) == 10
    assert {s["result"] for s in ctx.auth.details["dkim"]} <= {"permerror", "fail"}
    assert ctx.auth.arc == "fail"
    assert not ctx.has("AUTH_CHECK_FAILED")


def test_ses_verdicts_recorded_beside_ours(analyse: Callable[..., MessageContext]) -> None:
    raw = message(extra=[
        "Return-Path: <alice@sender.example>",
        "X-SES-Spam-Verdict: PASS", "X-SES-Virus-Verdict: FAIL",
        "Received-SPF: pass (spfCheck: domain of sender.example designates 203.0.113.5 as"
        " permitted sender) client-ip=203.0.113.5; envelope-from=alice@sender.example;",
        "Authentication-Results: amazonses.com; spf=pass (spfCheck: ok) client-ip=203.0.113.5;"
        " envelope-from=alice@sender.example; helo=mail.sender.example; dkim=pass"
        " header.i=@sender.example; dmarc=pass header.from=sender.example;",
        received(GOOD_IP, by="inbound-smtp.us-east-1.amazonaws.com").decode().rstrip(),
    ])
    ctx = analyse(raw, zone(), stages=("authenticate",))
    assert ctx.auth.upstream == {"spf": "pass", "dkim": "pass", "dmarc": "pass",
                                 "received_spf": "pass", "spam": "pass", "virus": "fail"}
    assert ctx.auth.spf == "pass"  # ours, from the Received line SES wrote


def test_a_crashing_check_is_a_finding_and_fails_closed(
        monkeypatch: pytest.MonkeyPatch, analyse: Callable[..., MessageContext]) -> None:
    from mailmoat.auth import dkim

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("dkimpy exploded")

    monkeypatch.setattr(dkim, "verify_all", boom)
    ctx = analyse(message(), zone(), client_ip=GOOD_IP, helo="mail.sender.example",
                  mail_from="alice@sender.example")
    assert ctx.disposition == Disposition.DELIVER  # the message is not held for it
    assert ctx.has("AUTH_CHECK_FAILED")
    assert (ctx.auth.spf, ctx.auth.dkim) == ("pass", "temperror")
    assert ctx.auth.warn and ctx.auth.defang


def test_stage_runs_on_its_own_with_only_a_resolver() -> None:
    # The stage needs nothing but services.resolver and services.geoip (may be None).
    from types import SimpleNamespace

    from mailmoat.adapters.dns import ZoneFileResolver
    from mailmoat.context import Envelope
    from mailmoat.stages.authenticate import Authenticate

    raw = b"Return-Path: <alice@sender.example>\r\n" + received(BAD_IP) + message()
    ctx = MessageContext(id="t1", raw=raw, envelope=Envelope())
    services = SimpleNamespace(resolver=ZoneFileResolver(zone()), geoip=None)
    Authenticate().run(ctx, services)  # type: ignore[arg-type]
    assert (ctx.auth.spf, ctx.auth.dmarc, ctx.auth.dmarc_policy) == ("fail", "fail", "reject")
    assert [h.ip for h in ctx.route] == [BAD_IP]


def test_partial_body_signature_is_a_finding(rsa_key: Key,
                                             analyse: Callable[..., MessageContext]) -> None:
    import dkim as dkimpy

    raw = message()
    header = dkimpy.sign(raw, b"s1", b"sender.example", rsa_key.private, length=True,
                         include_headers=[b"from", b"subject"])
    ctx = analyse(header + raw + b"appended\r\n", zone(sender_example=rsa_key),
                  client_ip=GOOD_IP, helo="mail.sender.example", mail_from="alice@sender.example")
    assert ctx.auth.dkim == "pass" and ctx.has("DKIM_PARTIAL_BODY")
