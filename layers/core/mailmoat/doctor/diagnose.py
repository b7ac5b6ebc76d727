"""What the doctor checks for one deployment, in order: the facts of the deployment (gathered by
doctor.cli for the local or AWS runtime) in, one Result per line out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mailmoat.config import TenantConfig
from mailmoat.doctor import HttpProbe, Result, Status, TlsProbe, checks
from mailmoat.ports import Resolver

MAX_DOMAINS = 50  # per run: a directory table with thousands of domains is not one doctor run


@dataclass(slots=True)
class Deployment:
    runtime: str  # "local" | "aws"
    tenants: list[TenantConfig]
    gateway_hosts: list[str]  # the names every tenant MX should give
    arc_selector: str
    arc_domain: str
    arc_public_b64: str | None  # the public half of the key the sealer uses; None: why in arc_problem
    portal_url: str | None
    delivery_mode: Callable[[TenantConfig], str]
    delivery_hosts: Callable[[TenantConfig], list[tuple[str, int]]]
    arc_problem: str = ""
    clamd_address: str | None = None
    clamd_required: bool = False
    tls_cert: Path | None = None
    data_dir: Path | None = None
    # Checks that do not apply here, with why (AWS: clamd lives in the scan image, no data dir).
    not_applicable: dict[str, str] = field(default_factory=dict)
    problems: list[Result] = field(default_factory=list)  # what gathering the facts ran into


@dataclass(frozen=True, slots=True)
class Thresholds:
    signature_warn_days: float = checks.SIGNATURE_WARN_DAYS
    cert_warn_days: int = checks.CERT_WARN_DAYS
    disk_warn_free_percent: float = checks.DISK_WARN_FREE_PERCENT
    disk_fail_free_percent: float = checks.DISK_FAIL_FREE_PERCENT


def diagnose(deployment: Deployment, *, resolver: Resolver, tls: TlsProbe, http: HttpProbe,
             clamd_version: Callable[[], str], magic_problem: Callable[[], str | None],
             now: datetime, thresholds: Thresholds = Thresholds()) -> list[Result]:
    d = deployment
    results = list(d.problems)
    if not d.tenants:
        results.append(Result("mx", "-", Status.FAIL, "no tenants configured",
                               "set MAILMOAT_CONFIG to the tenant TOML (AWS: the directory table)"))
    domains = [domain for t in d.tenants for domain in t.domains]
    for domain in domains[:MAX_DOMAINS]:
        results.extend(checks.check_mx(resolver, domain, d.gateway_hosts))
    if len(domains) > MAX_DOMAINS:
        results.append(Result("mx", "-", Status.WARN, f"{len(domains)} domains; checked the first "
                              f"{MAX_DOMAINS}", "run the doctor per tenant configuration"))
    results.append(checks.check_arc_key(resolver, d.arc_selector, d.arc_domain, d.arc_public_b64,
                                        key_problem=d.arc_problem))
    results.append(_unless_na(d, "clamd", lambda: checks.check_clamd(
        d.clamd_address, clamd_version, required=d.clamd_required, now=now,
        warn_days=thresholds.signature_warn_days)))
    results.append(_unless_na(d, "libmagic", lambda: checks.check_libmagic(magic_problem)))
    for tenant in d.tenants:
        results.extend(checks.check_delivery(tls, tenant, d.delivery_hosts(tenant),
                                             mode=d.delivery_mode(tenant), now=now))
    results.extend(checks.check_portal(http, d.portal_url, now))
    if d.tls_cert is not None:
        results.append(checks.check_certificate_file(d.tls_cert, now, thresholds.cert_warn_days))
    else:
        results.append(_unless_na(d, "certificate", lambda: Result(
            "certificate", "listener", Status.WARN, "no MAILMOAT_TLS_CERT: the listener offers no STARTTLS",
            "set MAILMOAT_TLS_CERT and MAILMOAT_TLS_KEY (many senders require TLS)")))
    if d.data_dir is not None:
        results.append(checks.check_disk(d.data_dir, warn_free_percent=thresholds.disk_warn_free_percent,
                                         fail_free_percent=thresholds.disk_fail_free_percent))
    else:
        results.append(_unless_na(d, "disk", lambda: Result("disk", "-", Status.SKIP, "no data directory")))
    return results


def _unless_na(d: Deployment, name: str, run: Callable[[], Result]) -> Result:
    why = d.not_applicable.get(name)
    return Result(name, d.runtime, Status.SKIP, why) if why else run()
