"""DNS blocklists: the connecting IP against IP zones, the body's URL domains against domain zones.

Queried through the Resolver port (live DNS, or a zone file in tests). What an answer means
(RFC 5782 and the Spamhaus return codes): an A record in 127.0.0.0/8 is a listing, with the
last octets saying why; 127.255.255.x is the list refusing the query (typo in the zone name,
a public resolver, too many queries) and is NOT a listing; anything outside 127/8 is a broken
or hijacked zone answering everything and is ignored. A timeout leaves the result unknown.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mailmoat.ports import DnsError, DnsTimeout, NoData, NXDomain, Resolver

# Bare http(s) URLs and www. hosts in text or in HTML attribute values.
_URL = re.compile(r"""(?i)(?:https?://|(?<![a-z0-9.-])www\.)[^\s<>"'()\[\]{}\\^`|\u3000-\u303f]+""")
MAX_TEXT_CHARS = 2_000_000  # body text searched for URLs; the rest is not read


@dataclass(frozen=True, slots=True)
class Zone:
    """One configured list: "zen.spamhaus.org", or "zone=127.0.0.2|127.0.0.4" to count only
    those return codes as a listing."""

    name: str
    codes: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Zone:
        name, _, codes = text.strip().partition("=")
        return cls(name.strip().strip(".").lower(),
                   frozenset(c.strip() for c in codes.split("|") if c.strip()))


@dataclass(frozen=True, slots=True)
class Listing:
    zone: str
    subject: str  # the IP or domain that is listed
    codes: tuple[str, ...]


@dataclass(slots=True)
class Outcome:
    """What the lists said about one message. `answered` counts queries that got a definite
    answer (listed or not); `findings` are (symbol, detail) for the report."""

    listed: list[Listing] = field(default_factory=list)
    answered: int = 0
    timeouts: int = 0
    findings: list[tuple[str, str]] = field(default_factory=list)


def ip_query_name(ip: str, zone: str) -> str:
    """1.2.3.4 → 4.3.2.1.<zone>; IPv6 as 32 reversed nibbles (RFC 5782 §2.4)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # reverse_pointer is "4.3.2.1.in-addr.arpa" / "<nibbles>.ip6.arpa": drop the suffix.
    return address.reverse_pointer.rsplit(".", 2)[0] + "." + zone


def listable_ip(ip: str | None) -> str | None:
    """The IP as a blocklist knows it, or None when no public list can say anything about it."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address) if address.is_global else None


def _classify(answers: list[str], zone: Zone) -> tuple[str, tuple[str, ...]]:
    """"listed" | "refused" | "bogus" | "ignored" (a code the zone's filter leaves out)."""
    codes: list[str] = []
    refused: list[str] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer.strip())
        except ValueError:
            return "bogus", (answer[:40],)
        if not isinstance(address, ipaddress.IPv4Address) or not str(address).startswith("127."):
            return "bogus", (str(address),)
        if str(address).startswith("127.255.255.") or str(address) == "127.0.1.255":
            refused.append(str(address))  # 127.0.1.255: a domain list asked about an IP
        else:
            codes.append(str(address))
    if refused and not codes:
        return "refused", tuple(refused)
    counted = [c for c in codes if not zone.codes or c in zone.codes]
    return ("listed", tuple(counted)) if counted else ("ignored", tuple(codes))


def _ask(resolver: Resolver, name: str, zone: Zone, subject: str, symbol: str,
         outcome: Outcome) -> None:
    try:
        answers = resolver.query(name, "A")
    except (NXDomain, NoData):
        outcome.answered += 1
        return
    except DnsTimeout:
        outcome.timeouts += 1
        outcome.findings.append(("DNSBL_TIMEOUT", f"{zone.name}: {subject}"))
        return
    except DnsError as exc:
        outcome.timeouts += 1
        outcome.findings.append(("DNSBL_TIMEOUT", f"{zone.name}: {subject}: {type(exc).__name__}"))
        return
    kind, codes = _classify(answers, zone)
    if kind == "listed":
        outcome.answered += 1
        outcome.listed.append(Listing(zone.name, subject, codes))
        outcome.findings.append((symbol, f"{zone.name}: {subject} {','.join(codes)}"))
    elif kind == "refused":
        # The list did not answer the question: not a listing, but the admin must know their
        # queries are refused (e.g. Spamhaus through a public resolver), or the list is useless.
        outcome.findings.append(("DNSBL_REFUSED", f"{zone.name}: {','.join(codes)}"))
    elif kind == "bogus":
        outcome.findings.append(("DNSBL_BAD_ANSWER", f"{zone.name}: {subject} {','.join(codes)}"))
    else:
        outcome.answered += 1


def check_ip(resolver: Resolver, ip: str, zones: Iterable[Zone], *,
             deadline: float | None = None) -> Outcome:
    outcome = Outcome()
    for zone in zones:
        if deadline is not None and time.monotonic() > deadline:
            outcome.findings.append(("DNSBL_BUDGET", f"{zone.name}: time budget used up"))
            break
        _ask(resolver, ip_query_name(ip, zone.name), zone, ip, "DNSBL_LISTED", outcome)
    return outcome


def check_domains(resolver: Resolver, domains: Iterable[str], zones: Iterable[Zone], *,
                  deadline: float | None = None) -> Outcome:
    outcome = Outcome()
    zone_list = list(zones)
    for domain in domains:
        for zone in zone_list:
            if deadline is not None and time.monotonic() > deadline:
                outcome.findings.append(("DNSBL_BUDGET", f"{zone.name}: time budget used up"))
                return outcome
            _ask(resolver, f"{domain}.{zone.name}", zone, domain, "URIBL_LISTED", outcome)
    return outcome


def url_domains(texts: Iterable[str], limit: int) -> tuple[list[str], int]:
    """Registrable domains (public suffix + 1, IDNA) of the URLs in the texts, in order of
    appearance, at most `limit`; and how many distinct ones there were in all."""
    from mailmoat.auth.dmarc import organizational_domain

    seen: dict[str, None] = {}
    budget = MAX_TEXT_CHARS
    for text in texts:
        if budget <= 0:
            break
        chunk = text[:budget]
        budget -= len(chunk)
        for match in _URL.finditer(chunk):
            url = match.group(0)
            if not url.lower().startswith(("http://", "https://")):
                url = "http://" + url
            try:
                host = urlsplit(url).hostname or ""
            except ValueError:
                continue
            host = host.strip(".").lower()
            if not host or "." not in host:
                continue
            try:
                ipaddress.ip_address(host)
                continue  # an IP literal is no domain; the domain lists would refuse it
            except ValueError:
                pass
            try:
                ascii_host = host.encode("idna").decode("ascii")
            except UnicodeError:
                continue
            domain = organizational_domain(ascii_host)
            if domain and "." in domain:
                seen.setdefault(domain, None)
    domains = list(seen)
    return domains[:limit], len(domains)
