"""DMARC (RFC 7489): record parsing, organizational domain, alignment, discovery, pct."""

from __future__ import annotations

from typing import Any

import pytest

from mailmoat.auth import dmarc
from mailmoat.auth.dmarc import DmarcRecord
from tests.unit.auth.helpers import resolver


@pytest.mark.parametrize(("text", "record"), [
    ("v=DMARC1; p=reject", DmarcRecord("reject")),
    ("v=DMARC1;p=quarantine;sp=none;adkim=s;aspf=s;pct=20",
     DmarcRecord("quarantine", "none", "s", "s", 20)),
    ("v=DMARC1; p=NONE; rua=mailto:d@x.example?subject=a=b", DmarcRecord("none")),
    ("v=DMARC1; p=reject; pct=abc; adkim=x", DmarcRecord("reject")),
    ("v=DMARC1; p=reject; pct=250", DmarcRecord("reject", pct=100)),
    ("v=DMARC1; p=bogus; rua=mailto:d@x.example", DmarcRecord("none")),  # §6.6.3 step 6
    ("v=DMARC1; p=bogus", None),
    ("v=DMARC1; p=reject; sp=bogus", None),
    ("v=DMARC1", None),
    ("p=reject; v=DMARC1", None),  # v= must come first
    ("v=spf1 -all", None),
    ("", None),
])
def test_parse_record(text: str, record: DmarcRecord | None) -> None:
    assert dmarc.parse_record(text) == record


@pytest.mark.parametrize(("domain", "org"), [
    ("example.com", "example.com"),
    ("a.b.example.com", "example.com"),
    ("mail.example.co.uk", "example.co.uk"),
    ("MAIL.Example.COM.", "example.com"),
    ("co.uk", "co.uk"),
    ("bucket.s3.amazonaws.com", "bucket.s3.amazonaws.com"),  # private PSL section
    ("x.example.test", "example.test"),
])
def test_organizational_domain(domain: str, org: str) -> None:
    assert dmarc.organizational_domain(domain) == org


@pytest.mark.parametrize(("a", "b", "mode", "ok"), [
    ("example.com", "example.com", "s", True),
    ("mail.example.com", "example.com", "s", False),
    ("mail.example.com", "example.com", "r", True),
    ("bounce.example.com", "news.example.com", "r", True),
    ("example.co.uk", "other.co.uk", "r", False),
    ("example.net", "example.com", "r", False),
    ("", "example.com", "r", False),
])
def test_alignment(a: str, b: str, mode: str, ok: bool) -> None:
    assert dmarc.aligned(a, b, mode) is ok


ZONE: dict[str, Any] = {
    "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; sp=quarantine"]},
    "_dmarc.strict.example": {"TXT": ["v=DMARC1; p=reject; adkim=s; aspf=s"]},
    "_dmarc.two.example": {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]},
    "_dmarc.sub.two.example": {"TXT": ["v=DMARC1; p=none"]},
    "_dmarc.bad.example": {"TXT": ["v=DMARC1; p=maybe"]},
    "_dmarc.other.example": {"TXT": ["some verification token", "v=DMARC1; p=quarantine"]},
    "_dmarc.slow.example": {"TXT": "TIMEOUT"},
    "_dmarc.half.example": {"TXT": ["v=DMARC1; p=reject; pct=0"]},
}


@pytest.mark.parametrize(("from_domain", "spf", "spf_domain", "dkim", "result", "policy",
                          "applied"), [
    ("example.com", "pass", "example.com", [], "pass", "reject", "none"),
    ("example.com", "pass", "bounce.example.com", [], "pass", "reject", "none"),  # relaxed
    ("example.com", "fail", "example.com", ["mail.example.com"], "pass", "reject", "none"),
    ("example.com", "pass", "esp.example", ["esp.example"], "fail", "reject", "reject"),
    ("example.com", "softfail", "example.com", [], "fail", "reject", "reject"),
    ("news.example.com", "none", "", [], "fail", "quarantine", "quarantine"),  # sp at org
    ("strict.example", "pass", "mail.strict.example", ["mail.strict.example"], "fail",
     "reject", "reject"),
    ("strict.example", "pass", "strict.example", [], "pass", "reject", "none"),
    ("two.example", "none", "", [], "none", None, None),  # multiple records: no DMARC
    ("sub.two.example", "none", "", [], "fail", "none", "none"),
    ("bad.example", "none", "", [], "permerror", None, None),  # malformed: issue 20 item 4
    ("other.example", "none", "", [], "fail", "quarantine", "quarantine"),
    ("nothing.example", "pass", "nothing.example", [], "none", None, None),
    ("slow.example", "pass", "slow.example", [], "temperror", None, None),
    ("half.example", "none", "", [], "fail", "reject", "quarantine"),  # outside pct=0
    ("", "pass", "x.example", [], "permerror", None, None),
])
def test_evaluate(from_domain: str, spf: str, spf_domain: str, dkim: list[str], result: str,
                  policy: str | None, applied: str | None) -> None:
    got = dmarc.evaluate(resolver(ZONE), from_domain, spf_result=spf, spf_domain=spf_domain,
                         dkim_pass_domains=dkim, sample=50)
    assert (got.result, got.policy, got.applied) == (result, policy, applied)


def test_pct_sampling_is_deterministic_per_message() -> None:
    assert dmarc.sample_point(b"message one") == dmarc.sample_point(b"message one")
    points = {dmarc.sample_point(f"m{i}".encode()) for i in range(300)}
    assert min(points) >= 0 and max(points) <= 99 and len(points) > 50


class Refusing:
    """A resolver that must not be asked: names DNS cannot carry are refused before it."""

    def query(self, name: str, rdtype: str) -> list[str]:
        raise AssertionError(f"asked for {name}")


@pytest.mark.parametrize("domain", ["a" * 64 + ".example", "b" * 300, "a..b"])
def test_names_dns_cannot_carry_are_not_looked_up(domain: str) -> None:
    got = dmarc.evaluate(Refusing(), domain, spf_result="none", spf_domain="",
                         dkim_pass_domains=[])
    assert got.result == "none"
