"""DNS blocklists through the Resolver port, from zone files: what each answer means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailmoat.context import Envelope, MessageContext
from mailmoat.spam import dnsbl
from tests.unit.spam.helpers import (
    CLEAN_IP,
    DOMAIN_ZONE,
    IP_ZONE,
    LISTED_IP,
    SPAM_DOMAIN,
    ip_query,
    message,
    spam_runtime,
)


def authenticate(tmp_path: Path, raw: bytes, client_ip: str | None, *,
                 zone_extra: dict[str, Any] | None = None, **overrides: Any) -> MessageContext:
    runtime = spam_runtime(tmp_path, zone_extra=zone_extra, **overrides)
    envelope = Envelope(client_ip=client_ip, helo="mx.sender.example",
                        mail_from="promo@sender.example", rcpt_to=["alice@example.test"])
    return runtime.analyse(raw, envelope, stages=("authenticate",))


def symbols(ctx: MessageContext) -> set[str]:
    return {f.symbol for f in ctx.findings}


@pytest.mark.parametrize(("answer", "verdict", "symbol"), [
    ({"A": ["127.0.0.2"]}, "spam", "DNSBL_LISTED"),
    ({"A": ["127.0.0.4", "127.0.0.10"]}, "spam", "DNSBL_LISTED"),
    # The list refuses to answer (public resolver, typo, quota): never a listing.
    ({"A": ["127.255.255.254"]}, "unknown", "DNSBL_REFUSED"),
    ({"A": ["127.255.255.252"]}, "unknown", "DNSBL_REFUSED"),
    # A dead list's domain that answers everything with a web server's address.
    ({"A": ["192.0.2.80"]}, "unknown", "DNSBL_BAD_ANSWER"),
    ("TIMEOUT", "unknown", "DNSBL_TIMEOUT"),
    ({"TXT": ["no A record"]}, "ham", None),  # NODATA: not listed
])
def test_ip_zone_answers(tmp_path: Path, answer: Any, verdict: str, symbol: str | None) -> None:
    ctx = authenticate(tmp_path, message(), "81.2.69.170",
                       zone_extra={ip_query("81.2.69.170"): answer}, dnsbl_domain_zones=[])
    assert ctx.spam.verdict == verdict
    if symbol:
        assert symbol in symbols(ctx)
    assert (ctx.spam.sources == [f"dnsbl:{IP_ZONE}"]) == (verdict == "spam")


def test_not_listed_is_ham(tmp_path: Path) -> None:
    ctx = authenticate(tmp_path, message(), CLEAN_IP, dnsbl_domain_zones=[])
    assert ctx.spam.verdict == "ham"
    assert ctx.spam.checks == {"dnsbl": "not listed"}
    assert not symbols(ctx) & {"DNSBL_LISTED", "DNSBL_TIMEOUT"}


def test_listed_ip_names_zone_and_code(tmp_path: Path) -> None:
    ctx = authenticate(tmp_path, message(), LISTED_IP, dnsbl_domain_zones=[])
    (finding,) = [f for f in ctx.findings if f.symbol == "DNSBL_LISTED"]
    assert finding.detail == f"{IP_ZONE}: {LISTED_IP} 127.0.0.2"
    assert ctx.spam.to_dict()["sources"] == [f"dnsbl:{IP_ZONE}"]


def test_code_filter_counts_only_the_configured_codes(tmp_path: Path) -> None:
    extra = {ip_query("81.2.69.171"): {"A": ["127.0.0.10"]}}  # e.g. a PBL-style policy listing
    ctx = authenticate(tmp_path, message(), "81.2.69.171", zone_extra=extra,
                       dnsbl_ip_zones=[f"{IP_ZONE}=127.0.0.2|127.0.0.3"], dnsbl_domain_zones=[])
    assert ctx.spam.verdict == "ham"
    ctx = authenticate(tmp_path, message(), LISTED_IP,
                       dnsbl_ip_zones=[f"{IP_ZONE}=127.0.0.2|127.0.0.3"], dnsbl_domain_zones=[])
    assert ctx.spam.verdict == "spam"


@pytest.mark.parametrize("client_ip", ["10.1.2.3", "127.0.0.1", "192.168.0.9", "not-an-ip", None])
def test_private_or_missing_ip_is_not_asked(tmp_path: Path, client_ip: str | None) -> None:
    # Any query would get an answer (NXDOMAIN: not listed) and make the verdict ham.
    ctx = authenticate(tmp_path, message(), client_ip, dnsbl_domain_zones=[])
    assert ctx.spam.verdict == "unknown"
    assert "dnsbl" not in ctx.spam.checks


def test_ip_query_names() -> None:
    assert dnsbl.ip_query_name("81.2.69.160", "zen.example") == "160.69.2.81.zen.example"
    assert dnsbl.ip_query_name("2001:db8::1", "zen.example") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example")
    # An IPv4-mapped IPv6 client is asked about as the IPv4 address it is.
    assert dnsbl.listable_ip("::ffff:81.2.69.160") == "81.2.69.160"
    assert dnsbl.listable_ip("fe80::1") is None


def test_ipv6_client_listed(tmp_path: Path) -> None:
    ip = "2a01:4f8:c0c:1::5"
    name = dnsbl.ip_query_name(ip, IP_ZONE)
    ctx = authenticate(tmp_path, message(), ip, zone_extra={name: {"A": ["127.0.0.3"]}},
                       dnsbl_domain_zones=[])
    assert ctx.spam.verdict == "spam"


def test_url_domain_listed(tmp_path: Path) -> None:
    body = f"Hello\nhttps://www.{SPAM_DOMAIN}/offer?id=1 and https://ok.example/\n"
    ctx = authenticate(tmp_path, message(body=body), CLEAN_IP, dnsbl_ip_zones=[])
    assert ctx.spam.verdict == "spam"
    assert ctx.spam.sources == [f"uribl:{DOMAIN_ZONE}"]
    (finding,) = [f for f in ctx.findings if f.symbol == "URIBL_LISTED"]
    assert SPAM_DOMAIN in finding.detail


def test_url_domains_from_html_and_text() -> None:
    html = ('<a href="https://a.b.spam-shop.example/x">x</a> <img src="http://cdn.ok.co.jp/i.png">'
            " www.shop.example/path http://192.0.2.1/raw https://例え.テスト/")
    domains, total = dnsbl.url_domains([html], 10)
    assert domains == ["spam-shop.example", "ok.co.jp", "shop.example",
                       "例え.テスト".encode("idna").decode()]
    assert total == 4


def test_too_many_url_domains_is_a_finding(tmp_path: Path) -> None:
    body = "\n".join(f"https://d{i}.example/" for i in range(30)) + "\n"
    ctx = authenticate(tmp_path, message(body=body), CLEAN_IP, dnsbl_ip_zones=[],
                       dnsbl_max_domains=5)
    assert any(f.symbol == "URL_DOMAIN_LIMIT" and f.detail.startswith("30 URL domains")
               for f in ctx.findings)
    assert ctx.spam.verdict == "ham"


def test_dnsbl_off_by_default(tmp_path: Path) -> None:
    ctx = authenticate(tmp_path, message(), LISTED_IP, dnsbl_ip_zones=[], dnsbl_domain_zones=[])
    assert ctx.spam.verdict == "unknown"
    assert ctx.spam.sources == []
