"""DNS look-ups the auth checks share: TXT through our Resolver port, CNAMEs followed."""

from __future__ import annotations

from mailmoat.ports import DnsError, DnsTimeout, NoData, NXDomain, Resolver

# A real resolver follows CNAMEs itself; the offline zone file answers only what is
# written for a name, so a NODATA answer is retried through the name's CNAME.
MAX_CNAME_HOPS = 8


class TxtOutcome:
    """What a TXT look-up gave: records, or none (NXDOMAIN / NODATA), or a timeout."""

    __slots__ = ("records", "timed_out")

    def __init__(self, records: list[str], timed_out: bool = False) -> None:
        self.records = records
        self.timed_out = timed_out


def valid_name(name: str) -> bool:
    """A name DNS can carry (RFC 1035 §2.3.4); the sender chooses these, so check first
    rather than let a resolver library raise on a 64-character label."""
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(0 < len(label) <= 63 for label in labels)


def query_follow(resolver: Resolver, name: str, rdtype: str) -> list[str]:
    """Records of `rdtype` for `name`, following at most MAX_CNAME_HOPS CNAMEs.

    NXDOMAIN, NODATA and names DNS cannot carry give []; DnsTimeout is raised to the
    caller, which maps it to its own temperror.
    """
    seen: set[str] = set()
    current = name.rstrip(".").lower()
    if not valid_name(current):
        return []
    for _ in range(MAX_CNAME_HOPS + 1):
        try:
            return resolver.query(current, rdtype)
        except NXDomain:
            return []
        except NoData:
            pass
        seen.add(current)
        try:
            targets = resolver.query(current, "CNAME")
        except (NXDomain, NoData):
            return []
        target = targets[0].rstrip(".").lower() if targets else ""
        if not target or target in seen:
            return []
        current = target
    return []


def txt(resolver: Resolver, name: str) -> TxtOutcome:
    try:
        return TxtOutcome(query_follow(resolver, name, "TXT"))
    except DnsTimeout:
        return TxtOutcome([], timed_out=True)


def non_existent(resolver: Resolver, name: str) -> bool:
    """RFC 9091 §2.1: a domain is non-existent when DNS says NXDOMAIN, or NODATA for each of
    A, AAAA and MX. A timeout (or any other answer) is not proof: the name counts as existing."""
    name = name.rstrip(".").lower()
    if not valid_name(name):
        return False
    for rdtype in ("A", "AAAA", "MX"):
        try:
            if resolver.query(name, rdtype):
                return False
        except NXDomain:
            return True
        except NoData:
            continue
        except DnsError:  # a timeout or a server failure
            return False
    return True
