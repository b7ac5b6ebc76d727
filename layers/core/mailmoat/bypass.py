"""The bypass check: can mail reach a tenant's mailboxes without passing through the gateway?

Two ways round the gateway are looked for. An MX of a tenant domain that names a host other
than the gateway lets any sender skip it. A mailbox host (the one the gateway delivers to) that
takes RCPT from an arbitrary outside sender lets anyone who knows its name skip it (Exchange
Online direct send, a connector not locked to the gateway, Google Workspace without the inbound
gateway restriction). The probe runs an SMTP dialogue up to RCPT and never sends DATA.
Everything goes through ports (Resolver, RcptProbe), so tests give a zone file and loopback.
"""

from __future__ import annotations

import argparse
import enum
import ipaddress
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mailmoat.config import TenantConfig
from mailmoat.ports import DnsError, DnsTimeout, NoData, NXDomain, Resolver

# Bounds: a hostile or broken zone cannot make one run probe without end.
MAX_DOMAINS = 20
MAX_MX = 10
MAX_ADDRESSES = 4  # per host name, A then AAAA
DEFAULT_TIMEOUT = 10.0  # seconds per socket operation of the probe
# An outside sender nobody could have allowed (RFC 2606); the tenant's own domain is tried too,
# since direct send is mail "from" the tenant to the tenant.
OUTSIDE_SENDER = "bypass-check@example.net"


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"  # could not tell: the path may be open
    FAIL = "FAIL"  # an open path


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # mx | delivery | source
    target: str  # the domain or host checked
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "target": self.target, "status": str(self.status),
                "detail": self.detail, "fix": self.fix}


@dataclass(slots=True)
class BypassReport:
    tenant: str
    checks: list[Check] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return any(c.status is Status.FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "open": self.open, "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True, slots=True)
class Gateway:
    """How the gateway is known from outside: the names its MX records should give, and the
    addresses those names (or the operator) give."""

    hostnames: tuple[str, ...]
    addresses: frozenset[str]

    def owns(self, host: str, host_addresses: Iterable[str]) -> bool:
        host = _norm(host)
        found = set(host_addresses)
        return host in self.hostnames or (bool(found) and found <= self.addresses)


@dataclass(frozen=True, slots=True)
class ProbeStep:
    sender: str
    mail: tuple[int, str]
    rcpt: tuple[int, str] | None  # None: MAIL was refused, RCPT not asked


@dataclass(frozen=True, slots=True)
class ProbeResult:
    address: str
    port: int
    connected: bool
    error: str = ""
    steps: tuple[ProbeStep, ...] = ()
    local_address: str | None = None  # the address we spoke from, as our socket saw it


class RcptProbe(Protocol):
    """One SMTP dialogue to `address`: per sender MAIL FROM and RCPT TO `recipient`, never DATA."""

    def probe(self, address: str, port: int, senders: Sequence[str], recipient: str) -> ProbeResult: ...


# --- what kind of mailbox host, and how to close it ---------------------------------------------

def host_kind(host: str) -> str:
    host = _norm(host)
    if host.endswith(".mail.protection.outlook.com") or host.endswith(".protection.outlook.com"):
        return "exchange-online"
    if host in ("aspmx.l.google.com", "smtp.google.com") or host.endswith(".google.com") \
            or host.endswith(".googlemail.com") or host == "googlemail.com":
        return "google"
    return "generic"


def mailbox_fix(host: str, gateway: Gateway) -> str:
    ips = ", ".join(sorted(gateway.addresses)) or "the gateway's IP addresses"
    name = gateway.hostnames[0] if gateway.hostnames else "the gateway"
    kind = host_kind(host)
    if kind == "exchange-online":
        return (f"Exchange Online: create an inbound connector (from: Partner organization) that "
                f"accepts mail only from the gateway, restricted by its TLS certificate ({name}) or "
                f"its IP addresses ({ips}), and reject direct send: "
                f"Set-OrganizationConfig -RejectDirectSend $true")
    if kind == "google":
        return (f"Google Workspace: Admin console > Apps > Google Workspace > Gmail > Spam, phishing "
                f"and malware > Inbound gateway: add the gateway IPs ({ips}) and tick "
                f"\"Reject all mail not from gateway IPs\"")
    return (f"Restrict {host} port 25 to the gateway's IPs ({ips}): a firewall rule or the MTA's "
            f"client access list (e.g. Postfix smtpd_client_restrictions / mynetworks)")


def mx_fix(domain: str, host: str, gateway: Gateway) -> str:
    target = ", ".join(gateway.hostnames) or "the gateway"
    text = f"Point every MX of {domain} at the gateway ({target}) and remove {host}"
    if host_kind(host) != "generic":
        text += "; then lock the mailbox host to the gateway: " + mailbox_fix(host, gateway)
    return text


# --- resolving ------------------------------------------------------------------------------------

def addresses_of(resolver: Resolver, host: str) -> list[str]:
    """The host's addresses through the resolver port (an IP literal is its own address)."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            found.extend(resolver.query(host, rdtype))
        except DnsError:
            continue
    return found[:MAX_ADDRESSES]


def gateway_identity(resolver: Resolver, hostnames: Sequence[str], addresses: Sequence[str]) -> Gateway:
    names = tuple(dict.fromkeys(_norm(h) for h in hostnames if h.strip()))
    known = set(addresses)
    if not known:
        for name in names:
            known.update(addresses_of(resolver, name))
    return Gateway(names, frozenset(known))


def mx_hosts(resolver: Resolver, domain: str) -> list[str]:
    """MX host names in preference order; raises DnsError as the resolver does."""
    ranked: list[tuple[int, str]] = []
    for answer in resolver.query(domain, "MX")[:MAX_MX]:
        pref, _, host = answer.partition(" ")
        ranked.append((int(pref) if pref.isdigit() else 65535, _norm(host)))
    return [host for _, host in sorted(ranked)]


def check_mx(resolver: Resolver, domain: str, gateway: Gateway) -> list[Check]:
    """Every MX of `domain` must be the gateway: a lower-priority one elsewhere is a way round."""
    try:
        hosts = mx_hosts(resolver, domain)
    except DnsTimeout:
        return [Check("mx", domain, Status.WARN, "the MX lookup timed out", "run the check again")]
    except (NXDomain, NoData):
        hosts = []
    if hosts == [""]:
        return [Check("mx", domain, Status.WARN, "null MX (RFC 7505): the domain takes no mail",
                      f"publish MX records for {domain} that name the gateway")]
    if not hosts:  # RFC 5321 §5.1: mail goes to the domain's own address
        own = addresses_of(resolver, domain)
        if not own:
            return [Check("mx", domain, Status.WARN, "no MX and no address: the domain takes no mail",
                          f"publish MX records for {domain} that name the gateway")]
        if gateway.owns(domain, own):
            return [Check("mx", domain, Status.OK, "no MX; the domain's address is the gateway's")]
        return [Check("mx", domain, Status.FAIL,
                      f"no MX record: senders deliver to {domain}'s own address "
                      f"({', '.join(own)}), not the gateway",
                      f"publish an MX for {domain} that names the gateway "
                      f"({', '.join(gateway.hostnames) or 'its host name'})")]
    checks: list[Check] = []
    for host in hosts:
        if gateway.owns(host, addresses_of(resolver, host)):
            checks.append(Check("mx", domain, Status.OK, f"MX {host} is the gateway"))
        else:
            checks.append(Check("mx", domain, Status.FAIL,
                                f"MX {host} is not the gateway: senders can deliver there directly",
                                mx_fix(domain, host, gateway)))
    return checks


# --- probing the mailbox host -------------------------------------------------------------------------

def delivery_hosts(resolver: Resolver, tenant: TenantConfig) -> list[tuple[str, int]]:
    """The mailbox host(s) the gateway delivers this tenant's mail to, with the port."""
    delivery = tenant.delivery
    if delivery.host:
        return [(delivery.host, delivery.port)]
    if delivery.mode == "ses" and delivery.routing_domain:
        try:
            return [(h, 25) for h in mx_hosts(resolver, delivery.routing_domain) if h][:1]
        except DnsError:
            return []
    return []


def judge_probe(host: str, result: ProbeResult, gateway: Gateway) -> Check:
    """A host that answered 2xx to RCPT from an outside sender is open; 5xx at MAIL or RCPT is
    closed; anything else (4xx, no connection) leaves the question open."""
    if not result.connected or (result.error and not result.steps):
        return Check("delivery", host, Status.WARN,
                     f"could not complete the probe of {result.address}:{result.port}: "
                     f"{result.error or 'no answer'}",
                     "run the check from a host that can reach it, or check the firewall")
    accepted = [s for s in result.steps if s.rcpt is not None and 200 <= s.rcpt[0] < 300]
    if accepted:
        senders = ", ".join(s.sender for s in accepted)
        return Check("delivery", host, Status.FAIL,
                     f"{result.address}:{result.port} accepted RCPT from an outside sender ({senders}) "
                     f"without the gateway", mailbox_fix(host, gateway))
    refused = [s for s in result.steps if (s.rcpt or s.mail)[0] >= 500]
    if result.steps and len(refused) == len(result.steps):
        codes = ", ".join(f"{s.sender}: {(s.rcpt or s.mail)[0]}" for s in refused)
        return Check("delivery", host, Status.OK,
                     f"{result.address}:{result.port} refused an outside sender ({codes})")
    replies = ", ".join(f"{s.sender}: {(s.rcpt or s.mail)[0]} {(s.rcpt or s.mail)[1]}"
                        for s in result.steps) or result.error
    return Check("delivery", host, Status.WARN,
                 f"{result.address}:{result.port} answered neither yes nor no ({replies})",
                 "run the check again later (a 4xx may be greylisting); " + mailbox_fix(host, gateway))


def check_delivery(resolver: Resolver, probe: RcptProbe, tenant: TenantConfig, gateway: Gateway,
                   recipient: str, senders: Sequence[str]) -> list[Check]:
    hosts = delivery_hosts(resolver, tenant)
    if not hosts:
        return [Check("delivery", tenant.delivery.mode, Status.OK,
                      f"delivery mode {tenant.delivery.mode} names no mailbox host to probe")]
    checks: list[Check] = []
    for host, port in hosts:
        addresses = addresses_of(resolver, host)
        if not addresses:
            checks.append(Check("delivery", host, Status.WARN, f"{host} has no address",
                                "check the tenant's delivery host"))
            continue
        result = probe.probe(addresses[0], port, senders, recipient)
        checks.append(judge_probe(host, result, gateway))
        # A host locked to the gateway's IPs rightly takes mail from them: an acceptance seen
        # from there proves nothing about outside senders (a refusal does).
        if checks[-1].status is Status.FAIL and result.local_address in gateway.addresses:
            checks.append(Check("source", host, Status.WARN,
                                f"the probe spoke from the gateway's own address {result.local_address}",
                                "run the check from an address outside the gateway's "
                                "(--source-address, or another host) to confirm"))
    return checks


# --- one run --------------------------------------------------------------------------------------------

def probe_senders(tenant: TenantConfig, outside: str) -> list[str]:
    """An outside sender, and a forged sender of the tenant's own domain (direct send)."""
    senders = [outside]
    if tenant.domains:
        senders.append(f"bypass-check@{tenant.domains[0]}")
    return list(dict.fromkeys(senders))


def choose_recipient(tenant: TenantConfig, known: Sequence[str]) -> str | None:
    """A real recipient of the tenant: the directory's first, the config's, or postmaster."""
    for address in [*known, *(u.address for u in tenant.users)]:
        if "@" in address:
            return address.lower()
    return f"postmaster@{tenant.domains[0]}" if tenant.domains else None


def bypass_check(resolver: Resolver, probe: RcptProbe, tenant: TenantConfig, gateway: Gateway, *,
                 recipient: str, senders: Sequence[str]) -> BypassReport:
    report = BypassReport(tenant.name)
    if not gateway.hostnames and not gateway.addresses:
        report.checks.append(Check("mx", tenant.name, Status.WARN, "the gateway's names are unknown",
                                   "pass --gateway-host and --gateway-ip"))
    for domain in tenant.domains[:MAX_DOMAINS]:
        report.checks.extend(check_mx(resolver, domain, gateway))
    report.checks.extend(check_delivery(resolver, probe, tenant, gateway, recipient, senders))
    return report


def format_report(report: BypassReport) -> str:
    lines = []
    for c in report.checks:
        line = f"{c.status:<4} {c.name} {c.target}: {c.detail}"
        if c.fix and c.status is not Status.OK:
            line += f"\n     fix: {c.fix}"
        lines.append(line)
    verdict = "open: mail can bypass the gateway" if report.open else "no open path found"
    lines.append(f"tenant {report.tenant}: {verdict}")
    return "\n".join(lines)


def _norm(name: str) -> str:
    return name.strip().lower().rstrip(".")


# --- the command ----------------------------------------------------------------------------------------

def add_bypass_commands(sub: Any) -> None:
    p = sub.add_parser("bypass-check",
                       help="does the tenant's mailbox host take mail that skipped the gateway?")
    p.add_argument("--tenant", required=True)
    p.add_argument("--dns-zone", type=Path, default=None, help="answer DNS from this zone file")
    p.add_argument("--gateway-host", action="append", default=None,
                   help="a name the MX records should give (default: the gateway's SMTP host name)")
    p.add_argument("--gateway-ip", action="append", default=None,
                   help="an address of the gateway (default: the gateway host names' addresses)")
    p.add_argument("--recipient", default=None, help="the recipient to probe (default: a real one)")
    p.add_argument("--probe-sender", default=OUTSIDE_SENDER, help="the outside sender to try")
    p.add_argument("--source-address", default=None,
                   help="speak from this local address (one the mailbox host should not trust)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds per SMTP step (at most 60)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bypass_check)


def cmd_bypass_check(args: argparse.Namespace) -> int:
    from mailmoat.adapters.smtp_probe import SmtplibRcptProbe
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.cli import _settings

    runtime = bootstrap(_settings(args))
    services = runtime.services
    tenant = next((t for t in services.config.tenants if t.name == args.tenant), None)
    if tenant is None:
        print(f"mailmoat: no tenant {args.tenant!r}", file=sys.stderr)
        return 2
    hostname = runtime.settings.smtp_hostname
    gateway = gateway_identity(services.resolver, args.gateway_host or [hostname], args.gateway_ip or [])
    known = [r.address for r in services.directory.recipients(tenant.name) if r.kind == "user"]
    recipient = (args.recipient or choose_recipient(tenant, known) or "").lower()
    probe = SmtplibRcptProbe(helo=hostname, timeout=max(0.5, min(args.timeout, 60.0)),
                             source_address=args.source_address)
    report = bypass_check(services.resolver, probe, tenant, gateway, recipient=recipient,
                          senders=probe_senders(tenant, args.probe_sender))
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_report(report))
    return 1 if report.open else 0
