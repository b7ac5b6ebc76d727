"""Stage 1: who sent this and by which route (SPF, DKIM, DMARC, ARC, Received chain)."""

from __future__ import annotations

import email.message
import logging
from collections.abc import Callable
from email.utils import getaddresses
from functools import partial
from typing import TypeVar

from mailmoat import loop
from mailmoat.auth import arc, decision, dkim, dmarc, received, ses, spf
from mailmoat.context import Hop, MessageContext
from mailmoat.message import parse_bytes
from mailmoat.pipeline import Services, register
from mailmoat.ports import GeoIp, Resolver
from mailmoat.settings import Settings
from mailmoat.spam.detect import detect as spam_detect

log = logging.getLogger("mailmoat.authenticate")

MAX_FROM_ADDRESSES = 5  # From domains evaluated for DMARC; more is a finding
_T = TypeVar("_T")

# Results worth a finding, per check. "pass"/"none" are the quiet outcomes.
_SPF_SYMBOLS = {"fail": "SPF_FAIL", "softfail": "SPF_SOFTFAIL", "neutral": "SPF_NEUTRAL",
                "temperror": "SPF_TEMPERROR", "permerror": "SPF_PERMERROR"}
_DKIM_SYMBOLS = {"fail": "DKIM_FAIL", "temperror": "DKIM_TEMPERROR",
                 "permerror": "DKIM_PERMERROR", "neutral": "DKIM_NEUTRAL"}
_DMARC_SYMBOLS = {"fail": "DMARC_FAIL", "temperror": "DMARC_TEMPERROR",
                  "permerror": "DMARC_PERMERROR"}
_DMARC_WORST = ("fail", "temperror", "permerror", "none", "pass")


class FromDomains:
    """What RFC5322.From gives DMARC: its distinct domains (at most MAX_FROM_ADDRESSES), how
    many addresses, and what was there without a domain ("undisclosed-recipients:;", a bare
    local part, "<>"): no author domain to evaluate, which RFC 7489 §6.6.1 leaves no pass."""

    __slots__ = ("addresses", "domainless", "domains", "headers")

    def __init__(self, domains: list[str], addresses: int, domainless: list[str],
                 headers: int) -> None:
        self.domains, self.addresses = domains, addresses
        self.domainless, self.headers = domainless, headers


def _from_domains(msg: email.message.Message) -> FromDomains:
    values = [str(v)[:2000] for k, v in msg.raw_items() if k.lower() == "from"][:10]
    try:
        pairs = getaddresses(values)
    except Exception:
        pairs = []
    addresses = [a for _n, a in pairs if a]
    domains: list[str] = []
    # An empty pair is a group with no members or "<>": an author without a domain too.
    domainless = [(a or n or "(empty)")[:80] for n, a in pairs
                  if not ("@" in a and dmarc.normalise(a.rpartition("@")[2]))]
    if values and not pairs:  # a From header with nothing in it
        domainless = ["(empty)"]
    for address in addresses:
        domain = dmarc.normalise(address.rpartition("@")[2]) if "@" in address else ""
        if domain and domain not in domains:
            domains.append(domain)
    return FromDomains(domains[:MAX_FROM_ADDRESSES], len(addresses), domainless, len(values))


def _dmarc_rank(result: dmarc.DmarcResult) -> tuple[int, int, int]:
    """Sort key, lowest speaks for the message: the worst result, and among failures the
    strictest policy applied then published (RFC 7489 §6.6.1: reject > quarantine > none)."""
    worst = _DMARC_WORST.index(result.result) if result.result in _DMARC_WORST else 0
    strictness = dmarc.POLICIES[::-1]  # reject first
    applied = strictness.index(result.applied) if result.applied in strictness else 3
    published = strictness.index(result.policy) if result.policy in strictness else 3
    return worst, applied, published


def _route(hops: list[received.ReceivedHop], geoip: GeoIp | None) -> list[Hop]:
    route: list[Hop] = []
    for hop in hops:
        country = None
        if geoip is not None and hop.ip and received.is_public(hop.ip):
            try:
                country = geoip.country(hop.ip)
            except Exception:  # the route is informative; a broken database must not stop mail
                country = None
        route.append(Hop(ip=hop.ip, country=country, from_name=hop.from_name,
                         by_name=hop.by_name))
    return route


def _dkim_domain(result: dkim.DkimResult, from_domains: list[str]) -> str | None:
    passing = result.passing_domains
    for domain in passing:
        if any(dmarc.aligned(domain, f, "r") for f in from_domains):
            return domain
    if passing:
        return passing[0]
    return next((s.domain for s in result.signatures if s.domain), None)


class _Guard:
    """Runs one check; a check that breaks on hostile input becomes a finding, never an exception."""

    def __init__(self, ctx: MessageContext, stage: str) -> None:
        self.ctx = ctx
        self.stage = stage
        self.crashed: list[str] = []

    def __call__(self, check: str, fn: Callable[[], _T], fallback: _T) -> _T:
        try:
            return fn()
        except Exception as exc:
            log.warning("auth check failed", extra={"message_id": self.ctx.id, "stage": self.stage,
                                                    "symbol": "AUTH_CHECK_FAILED"})
            detail = f"{check}: {type(exc).__name__}: {exc}"[:300]
            self.ctx.add("AUTH_CHECK_FAILED", "message", detail)
            self.crashed.append(check)
            return fallback


def _check_route(ctx: MessageContext, msg: email.message.Message, geoip: GeoIp | None,
                 guarded: _Guard) -> None:
    """The Received chain as a route, and the envelope from the headers when SMTP gave none."""
    no_hops: tuple[list[received.ReceivedHop], int] = ([], 0)
    hops, total = guarded("received", lambda: received.parse_chain(msg), no_hops)
    if total > received.MAX_RECEIVED:
        ctx.add("RECEIVED_LIMIT", "message",
                f"{total} Received headers, the first {received.MAX_RECEIVED} read")
    ctx.route = _route(hops, geoip)
    countries = sorted({h.country for h in ctx.route if h.country})
    if len(countries) > 1:
        ctx.add("ROUTE_MULTIPLE_COUNTRIES", "message", ",".join(countries))
    envelope = ctx.envelope
    if envelope.client_ip is None:
        guarded("envelope", lambda: received.envelope_from_message(msg, envelope), envelope)
        ctx.auth.details["envelope_source"] = "headers"
    else:
        ctx.auth.details["envelope_source"] = "smtp"


def _check_loop(ctx: MessageContext, msg: email.message.Message, settings: Settings,
                guarded: _Guard) -> None:
    """Has this message been through us before? Our trace header on it (we delivered it, and it
    came back: e.g. an ses-mode tenant without routing_domain, sent to its own MX), or more than
    loop.MAX_PASSES of our own Received lines (read from the route) when the header was lost."""
    traced = guarded("loop", lambda: loop.trace_passes(msg, settings), 0)
    hostname = settings.smtp_hostname.lower()
    passes = sum(1 for hop in ctx.route if hop.by_name == hostname)
    if traced:
        ctx.add("ROUTING_LOOP", "message",
                f"{traced} {loop.TRACE_HEADER} of {loop.gateway_name(settings)}: delivered by us before")
    elif passes > loop.MAX_PASSES:
        ctx.add("ROUTING_LOOP", "message",
                f"{passes} Received by {hostname}, more than {loop.MAX_PASSES} passes")


def _check_spf(ctx: MessageContext, resolver: Resolver, guarded: _Guard) -> spf.SpfResult:
    """SPF for MAIL FROM (and HELO, recorded only); 'none' without a client IP."""
    envelope, auth = ctx.envelope, ctx.auth
    if envelope.client_ip:
        client_ip = envelope.client_ip
        spf_result = guarded(
            "spf", lambda: spf.check_mail_from(resolver, client_ip, envelope.mail_from, envelope.helo),
            spf.SpfResult("temperror", "mailfrom", "", "check failed"))
        spf_helo = guarded("spf-helo", lambda: spf.check_helo(resolver, client_ip, envelope.helo),
                           spf.SpfResult("temperror", "helo", "", "check failed"))
        auth.details["spf_helo"] = spf_helo.to_dict()
    else:
        spf_result = spf.SpfResult("none", "mailfrom", "", "client IP unknown")
    auth.spf = spf_result.result
    auth.details["spf"] = spf_result.to_dict()
    if symbol := _SPF_SYMBOLS.get(auth.spf):
        ctx.add(symbol, "message", f"{spf_result.identity} {spf_result.domain}".strip())
    return spf_result


def _check_dkim(ctx: MessageContext, resolver: Resolver, guarded: _Guard) -> dkim.DkimResult:
    """Every DKIM signature (up to dkim.MAX_SIGNATURES) verified."""
    auth = ctx.auth
    dkim_result = guarded("dkim", lambda: dkim.verify_all(ctx.raw, resolver), dkim.DkimResult("temperror"))
    auth.dkim = dkim_result.result
    auth.details["dkim"] = [s.to_dict() for s in dkim_result.signatures]
    if dkim_result.total > dkim.MAX_SIGNATURES:
        ctx.add("DKIM_LIMIT", "message",
                f"{dkim_result.total} signatures, the first {dkim.MAX_SIGNATURES} verified")
    for sig in dkim_result.signatures:
        if sig.partial_body:
            ctx.add("DKIM_PARTIAL_BODY", "message", f"{sig.domain}: {sig.detail}")
    if symbol := _DKIM_SYMBOLS.get(auth.dkim):
        failed = [f"{s.domain}/{s.selector}: {s.result} {s.detail}".strip()
                  for s in dkim_result.signatures if s.result != "pass"]
        ctx.add(symbol, "message", "; ".join(failed)[:300])
    return dkim_result


def _check_dmarc(ctx: MessageContext, msg: email.message.Message, resolver: Resolver,
                 spf_result: spf.SpfResult, dkim_result: dkim.DkimResult, guarded: _Guard) -> None:
    """DMARC for each From domain, the worst speaking for the message; and the DKIM domain
    for our Authentication-Results."""
    auth = ctx.auth
    found = guarded("from", lambda: _from_domains(msg), FromDomains([], 0, [], 0))
    domains = found.domains
    if found.headers == 0:
        ctx.add("FROM_MISSING", "message", "no From address: DMARC cannot apply")
    elif found.addresses > 1:
        ctx.add("FROM_MULTIPLE", "message", ", ".join(domains))
    sample = dmarc.sample_point(ctx.raw)

    def evaluate(domain: str) -> dmarc.DmarcResult:
        return dmarc.evaluate(resolver, domain, spf_result=spf_result.result,
                              spf_domain=spf_result.domain,
                              dkim_pass_domains=dkim_result.passing_domains, sample=sample)

    dmarc_results = [
        guarded("dmarc", partial(evaluate, d), dmarc.DmarcResult("temperror", d, detail="check failed"))
        for d in domains]
    if found.domainless:
        dmarc_results.append(dmarc.DmarcResult(
            "permerror", "", detail=f"From without a domain: {', '.join(found.domainless)}"[:200]))
    if dmarc_results:
        # Several From domains: each is evaluated, the worst result speaks for the message,
        # and among failures the strictest policy (RFC 7489 §6.6.1).
        worst = min(dmarc_results, key=_dmarc_rank)
        auth.dmarc, auth.dmarc_policy = worst.result, worst.policy
        auth.details["dmarc"] = worst.to_dict()
        if len(dmarc_results) > 1:
            auth.details["dmarc_all"] = [r.to_dict() for r in dmarc_results]
        if symbol := _DMARC_SYMBOLS.get(worst.result):
            said = f"p={worst.policy} applied={worst.applied}" if worst.result == "fail" \
                else worst.detail
            ctx.add(symbol, "message", f"{worst.from_domain or '(no domain)'} {said}"[:300])
    else:
        auth.dmarc, auth.dmarc_policy = "none", None
    # header.d for our Authentication-Results (the rewrite stage reads it): the signature
    # that speaks for the From domain if one passed, else any that passed, else the first.
    if dkim_domain := _dkim_domain(dkim_result, domains):
        auth.details["dkim_domain"] = dkim_domain


def _check_arc(ctx: MessageContext, msg: email.message.Message, resolver: Resolver,
               guarded: _Guard) -> None:
    """The ARC chain, and what SES already said about the message."""
    auth = ctx.auth
    arc_result = guarded("arc", lambda: arc.verify_chain(ctx.raw, resolver),
                         arc.ArcResult("fail", 0, "check failed"))
    auth.arc = arc_result.result
    auth.details["arc"] = arc_result.to_dict()
    if auth.arc == "fail":
        ctx.add("ARC_FAIL", "message", arc_result.detail[:300])
    no_verdicts: dict[str, str] = {}
    auth.upstream.update(guarded("ses", lambda: ses.upstream_verdicts(msg), no_verdicts))


class Authenticate:
    name = "authenticate"

    def run(self, ctx: MessageContext, services: Services) -> None:
        msg = ctx.parsed.message if ctx.parsed is not None else parse_bytes(ctx.raw)[0]
        auth = ctx.auth
        guarded = _Guard(ctx, self.name)
        resolver = services.resolver
        _check_route(ctx, msg, services.geoip, guarded)
        # Without settings (the stage run on its own, with just a resolver) there is no "us".
        if (settings := getattr(services, "settings", None)) is not None:
            _check_loop(ctx, msg, settings, guarded)
        spf_result = _check_spf(ctx, resolver, guarded)
        dkim_result = _check_dkim(ctx, resolver, guarded)
        _check_dmarc(ctx, msg, resolver, spf_result, dkim_result, guarded)
        _check_arc(ctx, msg, resolver, guarded)

        # Decide (DESIGN §5) --------------------------------------------------------------
        verdict = decision.decide(spf=auth.spf, dkim=auth.dkim, dmarc=auth.dmarc,
                                  dmarc_policy=auth.dmarc_policy,
                                  check_failed=bool(set(guarded.crashed) - {"ses", "received"}))
        auth.warn, auth.defang = verdict.warn, verdict.defang
        auth.details["decision"] = list(verdict.reasons)

        # Spam verdict sources (detection only; policy.decide acts on it) ---------------------
        guarded("spam", lambda: spam_detect(ctx, services), None)


register(Authenticate())
