"""Adapters both composition roots build the same way from settings: DNS, GeoIP, antivirus,
the CAPE sandbox, and the production-mode check every root runs last."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailmoat.ports import Antivirus, GeoIp, Resolver, Sandbox
from mailmoat.settings import Settings

if TYPE_CHECKING:
    from mailmoat.pipeline import Services
    from mailmoat.scan.sandbox import SandboxConfig


def resolver(settings: Settings) -> Resolver:
    from mailmoat.adapters.dns import DnsPythonResolver, OverlayResolver, ZoneFileResolver

    if settings.dns_zone is not None:
        zone = ZoneFileResolver.from_file(settings.dns_zone)
        if settings.dns_zone_overlay:
            return OverlayResolver(zone, DnsPythonResolver(timeout=settings.dns_timeout))
        return zone
    return DnsPythonResolver(timeout=settings.dns_timeout)


def geoip(settings: Settings) -> GeoIp | None:
    if settings.geoip_db is None:
        return None
    from mailmoat.adapters.geoip import GeoIp2Reader

    return GeoIp2Reader(settings.geoip_db)


def antivirus(settings: Settings) -> Antivirus | None:
    from mailmoat.adapters.clamd import ClamdAntivirus

    return ClamdAntivirus.from_address(settings.clamd_socket)  # None → AV_DISABLED


def sandbox(settings: Settings) -> tuple[Sandbox | None, SandboxConfig]:
    """CAPE when MAILMOAT_CAPE_URL names one (the risky files are detonated); else none."""
    from mailmoat.scan.sandbox import SandboxConfig

    if not settings.cape_url:
        return None, SandboxConfig()
    from mailmoat.adapters.cape import CapeSandbox, CircuitBreaker

    token = settings.cape_token.get_secret_value() if settings.cape_token else None
    if settings.cape_token_file is not None:
        token = settings.cape_token_file.read_text(encoding="utf-8").strip()
    cape = CapeSandbox(settings.cape_url, token, timeout_seconds=settings.cape_timeout_seconds,
                       retries=settings.cape_retries,
                       breaker=CircuitBreaker(settings.cape_breaker_failures,
                                              settings.cape_breaker_cooldown_seconds),
                       danger_score=settings.cape_danger_score,
                       suspicious_score=settings.cape_suspicious_score,
                       max_report_bytes=settings.cape_max_report_bytes)
    # A file still without a verdict after the short inline wait is left `analysing` and decided
    # by the poll job: local/schedule.py (every minute), on AWS SandboxPollFunction (every 5).
    return cape, SandboxConfig(enabled=True, timeout_seconds=settings.cape_analysis_seconds,
                               poll_seconds=settings.cape_poll_seconds,
                               wait_inline_seconds=settings.cape_wait_inline_seconds,
                               danger_score=settings.cape_danger_score,
                               suspicious_score=settings.cape_suspicious_score)


def production_check(settings: Settings, services: Services,
                     needs: frozenset[str] | None = None) -> None:
    """Production mode refuses to start on what would fail open (mailmoat.production): no
    reachable antivirus, no working libmagic, a sealing key that was not provisioned, or a test
    fake among the adapters (every field of Services, and each tenant's mailer)."""
    if settings.mode != "production":
        return
    import dataclasses

    from mailmoat.production import require_production

    adapters: dict[str, object] = {
        f.name: getattr(services, f.name) for f in dataclasses.fields(services)
        if f.name not in {"settings", "config", "mailer_for", "own_mail_for", "outside_mail_for",
                          "before_seal", "sandbox_config", "admin"}}
    adapters.update({f"admin.{f.name}": getattr(services.admin, f.name)
                     for f in dataclasses.fields(services.admin) if f.name != "session_secret"})
    adapters.update({f"mailer:{t.name}": services.mailer_for(t) for t in services.config.tenants})
    from mailmoat.production import ALL_NEEDS

    require_production(antivirus=services.antivirus,
                       arc_key_provisioned=settings.arc_key_file is not None, adapters=adapters,
                       needs=ALL_NEEDS if needs is None else needs)
