"""SPF through our Resolver port: results table, CNAMEs in the zone file, no live DNS."""

from __future__ import annotations

from typing import Any

import pytest

from mailmoat.auth import spf
from mailmoat.ports import Resolver
from tests.unit.auth.helpers import resolver

ZONE: dict[str, Any] = {
    "pass.example": {"TXT": ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"]},
    "soft.example": {"TXT": ["v=spf1 ~all"]},
    "neutral.example": {"TXT": ["v=spf1 ?all"]},
    "norecord.example": {"A": ["192.0.2.1"]},
    "two.example": {"TXT": ["v=spf1 -all", "v=spf1 +all"]},
    "slow.example": {"TXT": "TIMEOUT"},
    "incl.example": {"TXT": ["v=spf1 include:alias.example -all"]},
    "alias.example": {"CNAME": ["pass.example"]},
    "mx.example": {"TXT": ["v=spf1 mx -all"], "MX": ["10 mail.mx.example"]},
    "mail.mx.example": {"A": ["198.51.100.20"]},
    "helo.example": {"TXT": ["v=spf1 a -all"], "A": ["198.51.100.30"]},
}


@pytest.mark.parametrize(("ip", "mail_from", "helo", "result", "identity"), [
    ("192.0.2.5", "a@pass.example", "h.example", "pass", "mailfrom"),
    ("2001:db8::5", "a@pass.example", "h.example", "pass", "mailfrom"),
    ("198.51.100.1", "a@pass.example", "h.example", "fail", "mailfrom"),
    ("198.51.100.1", "a@soft.example", "h.example", "softfail", "mailfrom"),
    ("198.51.100.1", "a@neutral.example", "h.example", "neutral", "mailfrom"),
    ("198.51.100.1", "a@norecord.example", "h.example", "none", "mailfrom"),
    ("198.51.100.1", "a@nxdomain.example", "h.example", "none", "mailfrom"),
    ("198.51.100.1", "a@two.example", "h.example", "permerror", "mailfrom"),
    ("198.51.100.1", "a@slow.example", "h.example", "temperror", "mailfrom"),
    ("192.0.2.5", "a@incl.example", "h.example", "pass", "mailfrom"),  # include → CNAME
    ("198.51.100.20", "a@mx.example", "h.example", "pass", "mailfrom"),
    ("198.51.100.30", "", "helo.example", "pass", "helo"),  # null sender → HELO identity
    ("198.51.100.30", None, "helo.example", "pass", "helo"),
    ("not-an-ip", "a@pass.example", "h.example", "permerror", "mailfrom"),
])
def test_spf_results(ip: str, mail_from: str | None, helo: str, result: str,
                     identity: str) -> None:
    got = spf.check_mail_from(resolver(ZONE), ip, mail_from, helo)
    assert (got.result, got.identity) == (result, identity)


def test_helo_identity_checked_separately() -> None:
    r = resolver(ZONE)
    assert spf.check_helo(r, "198.51.100.30", "helo.example").result == "pass"
    assert spf.check_helo(r, "198.51.100.31", "helo.example").result == "fail"
    assert spf.check_helo(r, "198.51.100.31", "[198.51.100.31]").result == "none"


class Counting:
    def __init__(self, inner: Resolver) -> None:
        self.inner = inner
        self.asked: list[tuple[str, str]] = []

    def query(self, name: str, rdtype: str) -> list[str]:
        self.asked.append((name, rdtype))
        return self.inner.query(name, rdtype)


def test_lookups_go_through_the_port_only() -> None:
    counting = Counting(resolver(ZONE))
    assert spf.check_mail_from(counting, "198.51.100.20", "a@mx.example", "h").result == "pass"
    assert ("mx.example", "TXT") in counting.asked
    assert ("mx.example", "MX") in counting.asked
    assert ("mail.mx.example", "A") in counting.asked
