"""DMARC (RFC 7489): policy discovery, identifier alignment and the policy that applies.

Written here rather than taken from `authheaders`: that package brings its own PSL
(publicsuffix2), splits tag values on every "=" (a rua URI with a query breaks it) and
cannot tell a DNS timeout (temperror) from no record. This module uses the shipped list
of `publicsuffixlist` and our Resolver port.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from mailmoat.auth.lookup import non_existent, txt
from mailmoat.ports import Resolver

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

POLICIES = ("none", "quarantine", "reject")
_V_DMARC1 = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)", re.IGNORECASE)
# A v=DMARC1 tag that is not the first: meant as a DMARC record, but malformed (§6.3).
_V_DMARC1_LATER = re.compile(r";\s*v\s*=\s*DMARC1\s*(;|$)", re.IGNORECASE)
_MAILTO = re.compile(r"^\s*mailto:[^@\s]+@[^@\s]+", re.IGNORECASE)


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    # Loaded on first use: the shipped list costs ~50 ms, paid once per process.
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def load_public_suffix_list() -> None:
    """Parse the list now rather than on the first message (a long-lived worker: mailmoat.preload)."""
    _psl()


def normalise(domain: str) -> str:
    return domain.strip().strip(".").lower()


@lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label; a suffix itself stays as it is."""
    domain = normalise(domain)
    if not domain:
        return ""
    try:
        return _psl().privatesuffix(domain) or domain
    except Exception:  # an odd label must not stop the check
        return domain


def aligned(a: str, b: str, mode: str) -> bool:
    """Identifier alignment: strict = identical, relaxed = same organizational domain."""
    a, b = normalise(a), normalise(b)
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    p: str
    sp: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    np: str | None = None  # RFC 9091 §4.1: for non-existent subdomains


def parse_record(text: str) -> DmarcRecord | None:
    """A usable record, or None (RFC 7489 §6.3, §6.6.3 step 6)."""
    if not _V_DMARC1.match(text):
        return None
    tags: dict[str, str] = {}
    for chunk in text.split(";")[1:]:
        name, sep, value = chunk.partition("=")  # only the first "=": rua URIs contain more
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower() or None
    np = tags.get("np", "").lower() or None
    if p not in POLICIES or any(v is not None and v not in POLICIES for v in (sp, np)):
        # A broken p= counts as p=none only when the owner asked for reports (step 6).
        rua = tags.get("rua", "")
        if rua and any(_MAILTO.match(u) for u in rua.split(",")):
            return DmarcRecord(p="none")
        return None
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(p=p, sp=sp, np=np, adkim=adkim if adkim in ("r", "s") else "r",
                       aspf=aspf if aspf in ("r", "s") else "r", pct=max(0, min(100, pct)))


@dataclass(frozen=True, slots=True)
class Discovery:
    record: DmarcRecord | None
    record_domain: str | None
    temperror: bool = False
    detail: str = ""
    permerror: bool = False  # a record meant as DMARC that cannot be read


def _records_at(resolver: Resolver, domain: str) -> tuple[list[str], bool]:
    """The TXT records at _dmarc.<domain> meant as DMARC: starting with v=DMARC1, or with the
    tag later (malformed, so parse_record refuses it and the result is permerror)."""
    outcome = txt(resolver, f"_dmarc.{domain}")
    meant = [r for r in outcome.records if _V_DMARC1.match(r) or _V_DMARC1_LATER.search(r)]
    return meant, outcome.timed_out


def discover(resolver: Resolver, from_domain: str) -> Discovery:
    """RFC 7489 §6.6.3: the From domain's record, else the organizational domain's."""
    candidates = [from_domain]
    org = organizational_domain(from_domain)
    if org and org != from_domain:
        candidates.append(org)
    for domain in candidates:
        records, timed_out = _records_at(resolver, domain)
        if timed_out:
            return Discovery(None, domain, temperror=True, detail=f"_dmarc.{domain} timed out")
        if len(records) > 1:
            # Several records: policy discovery ends and DMARC does not apply (step 5).
            return Discovery(None, domain, detail=f"multiple DMARC records at _dmarc.{domain}")
        if records:
            record = parse_record(records[0])
            if record is None:
                # Malformed (no or unknown p=, bad sp= or np=, v= not first): a permanent
                # error the owner must fix, not the absence of a policy.
                return Discovery(None, domain, permerror=True,
                                 detail=f"malformed DMARC record at _dmarc.{domain}: "
                                        f"{records[0][:120]}")
            return Discovery(record, domain)
    return Discovery(None, None, detail="no DMARC record")


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    from_domain: str
    policy: str | None = None  # the published p (or sp for a subdomain)
    applied: str | None = None  # what the policy asks after pct sampling
    record_domain: str | None = None
    spf_aligned: bool = False
    dkim_aligned: bool = False
    pct: int = 100
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"result": self.result, "from_domain": self.from_domain, "policy": self.policy,
                "applied": self.applied, "record_domain": self.record_domain,
                "spf_aligned": self.spf_aligned, "dkim_aligned": self.dkim_aligned,
                "pct": self.pct, "detail": self.detail}


def _weaker(policy: str) -> str:
    # RFC 7489 §6.6.4: a message outside pct gets the next less strict policy.
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


def sample_point(key: bytes) -> int:
    """0..99 from the message itself, so a re-run of the stage decides the same (idempotency)."""
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") % 100


def _policy_for(resolver: Resolver, record: DmarcRecord, from_domain: str,
                record_domain: str | None) -> str:
    """p for the record's own domain; for a subdomain np= when it does not exist (RFC 9091
    §4.1, looked up only when np= is published), else sp=, else p= (RFC 7489 §6.3)."""
    if record_domain == from_domain:
        return record.p
    if record.np and non_existent(resolver, from_domain):
        return record.np
    return record.sp or record.p


def evaluate(resolver: Resolver, from_domain: str, *, spf_result: str, spf_domain: str,
             dkim_pass_domains: list[str], sample: int = 0) -> DmarcResult:
    """DMARC for one RFC5322.From domain given our SPF and DKIM results."""
    from_domain = normalise(from_domain)
    if not from_domain:
        return DmarcResult("permerror", "", detail="no From domain")
    found = discover(resolver, from_domain)
    if found.temperror:
        return DmarcResult("temperror", from_domain, record_domain=found.record_domain,
                           detail=found.detail)
    if found.permerror:
        return DmarcResult("permerror", from_domain, record_domain=found.record_domain,
                           detail=found.detail)
    record = found.record
    if record is None:
        return DmarcResult("none", from_domain, record_domain=found.record_domain,
                           detail=found.detail)
    policy = _policy_for(resolver, record, from_domain, found.record_domain)
    spf_ok = spf_result == "pass" and aligned(spf_domain, from_domain, record.aspf)
    dkim_ok = any(aligned(d, from_domain, record.adkim) for d in dkim_pass_domains)
    if spf_ok or dkim_ok:
        return DmarcResult("pass", from_domain, policy, "none", found.record_domain,
                           spf_ok, dkim_ok, record.pct)
    applied = policy if sample < record.pct else _weaker(policy)
    return DmarcResult("fail", from_domain, policy, applied, found.record_domain,
                       False, False, record.pct, "neither SPF nor DKIM aligned with a pass")
