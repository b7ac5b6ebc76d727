"""The Received chain as hops (client IP, HELO, names), and the SMTP envelope derived from it."""

from __future__ import annotations

import email.message
import ipaddress
import re
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from email.utils import parseaddr

from mailmoat.charsets import unescape_surrogates
from mailmoat.context import Envelope

MAX_RECEIVED = 50  # headers looked at; more is itself a finding for the caller
MAX_HEADER_CHARS = 2000  # of one Received value; the rest is never needed
# How many hops below the top may be the receiving side's own internal relays.
MAX_INTERNAL_HOPS = 5

# Addresses that can never be a sender's public client: private, loopback, link-local,
# shared (CGNAT), multicast, unspecified, reserved. The documentation ranges
# (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32) are deliberately NOT here:
# they never occur on the Internet, the GeoIP database simply does not know them, and
# DESIGN §9's example route and our fixtures use them as stand-ins for public addresses.
_NON_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "64:ff9b:1::/48",
))

_BRACKETED = re.compile(r"\[(?:ipv6:)?([0-9a-f:.]{2,45})\]", re.IGNORECASE)
# Exchange Online writes the client address in parentheses without brackets.
_PARENTHESISED = re.compile(r"\(\s*([0-9a-f:.]{2,45})\s*\)", re.IGNORECASE)
_BARE_V4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
_HELO_IN_COMMENT = re.compile(r"\bhelo[=\s]+([^\s()\[\];]+)", re.IGNORECASE)
_TOKEN = re.compile(r"[^\s()\[\];]+")


@dataclass(frozen=True, slots=True)
class ReceivedHop:
    """One Received header: `from <from_name> (<comment>) by <by_name> ...`."""

    ip: str | None
    from_name: str | None
    by_name: str | None
    helo: str | None
    raw: str


def parse_ip(text: str) -> str | None:
    """A normalised IPv4/IPv6 address, or None; IPv4-mapped IPv6 becomes IPv4."""
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def is_public(ip: str | None) -> bool:
    """True for an address worth a GeoIP look-up and fit to be the SMTP client."""
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not any(addr.version == net.version and addr in net for net in _NON_PUBLIC)


# What the clause split looks at: comment brackets, the ";" before the date, and the clause
# keywords where a word starts and a space follows. One regex pass instead of a Python loop
# over every character (~2 Received fields a message, most of the route check's time).
_CLAUSE_TOKENS = re.compile(r"[();]|(?<!\S)(from|by|via|with|id|for)(?=\s)", re.IGNORECASE)


def _split_clauses(value: str) -> tuple[str, str]:
    """(from-part, by-part) of a Received value, keywords found outside comments."""
    depth = 0
    starts: dict[str, int] = {}
    stop = len(value)
    for token in _CLAUSE_TOKENS.finditer(value):
        ch = token.group(0)
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == ";":
            if depth == 0:
                stop = token.start()
                break  # the date follows
        elif depth == 0:
            starts.setdefault(token.group(1).lower(), token.end())

    def clause(keyword: str) -> str:
        if keyword not in starts:
            return ""
        begin = starts[keyword]
        later = [s - len(k) for k, s in starts.items() if s > begin]
        return value[begin:min([*later, stop])].strip()

    return clause("from"), clause("by")


def parse_received(value: str) -> ReceivedHop:
    """Parse one Received value; anything unrecognisable leaves the field None."""
    value = " ".join(value[:MAX_HEADER_CHARS].split())
    from_part, by_part = _split_clauses(value)
    ip = None
    for pattern in (_BRACKETED, _PARENTHESISED, _BARE_V4):
        for match in pattern.finditer(from_part):
            ip = parse_ip(match.group(1))
            if ip:
                break
        if ip:
            break
    first = _TOKEN.match(from_part)
    from_name = first.group(0).lower() if first else None
    if from_name is None and from_part.startswith("["):
        from_name = from_part.split("]", 1)[0] + "]"
    helo_match = _HELO_IN_COMMENT.search(from_part)
    # Postfix and sendmail write the HELO name first; Exim writes rDNS first and helo= after.
    helo = helo_match.group(1) if helo_match else (from_part.split()[0] if from_part else None)
    by_match = _TOKEN.match(by_part)
    return ReceivedHop(ip=ip, from_name=from_name,
                       by_name=by_match.group(0).lower() if by_match else None,
                       helo=helo, raw=value)


def received_values(msg: email.message.Message, limit: int = MAX_RECEIVED) -> tuple[list[str], int]:
    """Raw Received values top to bottom (at most `limit`) and how many there were in all."""
    values: list[str] = []
    total = 0
    for key, value in msg.raw_items():
        if key.lower() != "received":
            continue
        total += 1
        if len(values) < limit:
            values.append(unescape_surrogates(str(value)))  # raw 8-bit host names, decoded
    return values, total


def parse_chain(msg: email.message.Message,
                limit: int = MAX_RECEIVED) -> tuple[list[ReceivedHop], int]:
    """The hops in header order (newest, i.e. the receiving side, first) and the header count."""
    values, total = received_values(msg, limit)
    return [parse_received(v) for v in values], total


def client_hop(hops: list[ReceivedHop]) -> ReceivedHop | None:
    """The hop that recorded the connecting client: the topmost Received, skipping (at most
    MAX_INTERNAL_HOPS) the receiving side's own relays from private addresses. Headers
    further down were written by the sender's side and prove nothing."""
    for hop in hops[: MAX_INTERNAL_HOPS + 1]:
        if hop.ip and is_public(hop.ip):
            return hop
    return None


def return_path(msg: email.message.Message) -> str | None:
    """The topmost Return-Path address; "" for the null reverse path `<>`."""
    for key, value in msg.raw_items():
        if key.lower() == "return-path":
            # Raw 8-bit (SMTPUTF8 addresses) arrives surrogate-escaped: decode it.
            text = " ".join(unescape_surrogates(str(value)).split())[:1000]
            if text.replace(" ", "") == "<>":
                return ""
            return parseaddr(text)[1]
    return None


def envelope_from_message(msg: email.message.Message | bytes, envelope: Envelope) -> Envelope:
    """DESIGN §9: fill only the envelope fields the caller left None from the topmost
    Received added by the receiving side (client IP, HELO) and from Return-Path.

    `msg` may be the raw message; then only its header block is parsed.
    """
    if isinstance(msg, bytes):
        msg = BytesHeaderParser(policy=policy.default).parsebytes(msg)
    if envelope.client_ip is None or envelope.helo is None:
        hops, _total = parse_chain(msg, MAX_INTERNAL_HOPS + 1)
        hop = client_hop(hops)
        if hop is not None:
            if envelope.client_ip is None:
                envelope.client_ip = hop.ip
            if envelope.helo is None and hop.helo:
                envelope.helo = hop.helo
    if envelope.mail_from is None:
        envelope.mail_from = return_path(msg)
    return envelope
