"""SPF (RFC 7208) with pyspf, its DNS answered by our Resolver port instead of live DNS."""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import spf as pyspf

from mailmoat.ports import DnsTimeout, NoData, NXDomain, Resolver

RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
# RFC 7208 §4.6.4 recommends at least 20 s for the whole evaluation; pyspf enforces it.
QUERY_SECONDS = 20.0

# pyspf looks names up through its module-level `DNSLookup`. We install one dispatcher
# once and pick the resolver per call from a context variable, so concurrent checks
# (threads, asyncio) each use their own resolver and other users of pyspf are untouched.
_resolver_var: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar(
    "mailmoat_spf_resolver", default=None)
_Answer = list[tuple[tuple[str, str], Any]]


def _answers(resolver: Resolver, name: str, qtype: str) -> _Answer:
    """One look-up in the shape pyspf expects: [((name, type), value), ...]."""
    try:
        records = resolver.query(name, qtype)
    except NXDomain:
        return []
    except DnsTimeout as exc:
        raise pyspf.TempError(f"DNS timeout: {name}/{qtype}") from exc
    except NoData:
        # The zone file does not chase CNAMEs; hand pyspf the alias and it follows it
        # (with its own loop and length limits).
        try:
            aliases = resolver.query(name, "CNAME")
        except (NXDomain, NoData):
            return []
        except DnsTimeout as exc:
            raise pyspf.TempError(f"DNS timeout: {name}/CNAME") from exc
        return [((name, "CNAME"), aliases[0].rstrip("."))] if aliases else []
    out: _Answer = []
    for record in records:
        value: Any
        if qtype in ("TXT", "SPF"):
            # Our port already joined the strings of one record (RFC 7208 §3.3).
            value = (record.encode("utf-8"),)
        elif qtype == "MX":
            pref, _, host = record.strip().partition(" ")
            try:
                value = (int(pref), host.strip().rstrip("."))
            except ValueError:
                continue
        elif qtype in ("A", "AAAA"):
            try:
                value = str(ipaddress.ip_address(record.strip()))
            except ValueError:
                continue
        else:  # PTR, CNAME
            value = record.strip().rstrip(".")
        out.append(((name, qtype), value))
    return out


def _dispatch(original: Callable[..., Any]) -> Callable[..., Any]:
    def lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> Any:
        resolver = _resolver_var.get()
        if resolver is None:
            return original(name, qtype, strict, timeout)
        return _answers(resolver, name, qtype)

    lookup._mailmoat = True  # type: ignore[attr-defined]
    return lookup


if not getattr(pyspf.DNSLookup, "_mailmoat", False):
    pyspf.DNSLookup = _dispatch(pyspf.DNSLookup)


@contextmanager
def using(resolver: Resolver) -> Iterator[None]:
    token = _resolver_var.set(resolver)
    try:
        yield
    finally:
        _resolver_var.reset(token)


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: str  # one of RESULTS
    identity: str  # "mailfrom" or "helo" (RFC 7208 §2.3/§2.4)
    domain: str  # the domain whose policy was evaluated
    explanation: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"result": self.result, "identity": self.identity, "domain": self.domain,
                "explanation": self.explanation}


def query(resolver: Resolver, ip: str, sender: str, helo: str, *,
          default_explanation: str | None = None,
          querytime: float = QUERY_SECONDS) -> tuple[str, str]:
    """pyspf check_host for (ip, MAIL FROM, HELO) through `resolver`: (result, explanation).

    An empty sender means the null reverse path: pyspf then checks postmaster@HELO.
    """
    with using(resolver):
        try:
            q = pyspf.query(i=ip, s=sender, h=helo, strict=True, querytime=querytime)
        except pyspf.PermError as exc:  # an unparsable client IP
            return "permerror", str(exc)
        if default_explanation is not None:
            q.set_default_explanation(default_explanation)
        try:
            result, _code, explanation = q.check()
        except (pyspf.TempError, DnsTimeout) as exc:
            return "temperror", str(exc)
        except pyspf.PermError as exc:
            return "permerror", str(exc)
        except RecursionError:
            return "permerror", "recursion"
    result = {"unknown": "permerror", "error": "temperror"}.get(result, result)
    return (result if result in RESULTS else "permerror"), str(explanation or "")


def _domain_of(sender: str) -> str:
    return sender.rpartition("@")[2].strip().rstrip(".").lower()


def check_mail_from(resolver: Resolver, ip: str, mail_from: str | None,
                    helo: str | None) -> SpfResult:
    """The MAIL FROM identity; with a null sender, the HELO identity (RFC 7208 §2.4)."""
    sender = (mail_from or "").strip().strip("<>")
    helo = (helo or "").strip()
    if not sender and not helo:
        return SpfResult("none", "mailfrom", "", "no MAIL FROM and no HELO")
    result, explanation = query(resolver, ip, sender, helo)
    if sender:
        return SpfResult(result, "mailfrom", _domain_of(sender), explanation)
    return SpfResult(result, "helo", helo.lower().rstrip("."), explanation)


def check_helo(resolver: Resolver, ip: str, helo: str | None) -> SpfResult:
    """The HELO identity on its own (RFC 7208 §2.3); an address literal gives none."""
    helo = (helo or "").strip()
    if not helo or helo.startswith("[") or "." not in helo:
        return SpfResult("none", "helo", helo, "HELO is not a domain name")
    result, explanation = query(resolver, ip, f"postmaster@{helo}", helo)
    return SpfResult(result, "helo", helo.lower().rstrip("."), explanation)
