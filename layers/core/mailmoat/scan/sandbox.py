"""The optional sandbox port: submit, poll, give up at a timeout (backend: adapters/cape.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from mailmoat.ports import Sandbox

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig

SandboxVerdict = Literal["malicious", "suspicious", "clean"]


class SandboxUnavailable(Exception):
    """The sandbox cannot be asked now (its circuit breaker is open, it keeps failing): the
    file is not checked, so the finding is SCAN_FAILED and the policy fails closed."""


@dataclass(frozen=True, slots=True)
class SandboxReport:
    """A verdict with what the sandbox named: its score and the signatures/families (detail)."""

    verdict: SandboxVerdict
    score: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Disabled by default; a deployment that has a sandbox service turns it on."""

    enabled: bool = False
    timeout_seconds: float = 300.0
    poll_seconds: float = 5.0
    # How long the scan stage waits for a verdict before the file goes to the portal as
    # `analysing` (SANDBOX_ANALYSING, decided later by mailmoat.sandbox_verdicts). Set it to
    # timeout_seconds to wait in the stage as before.
    wait_inline_seconds: float = 5.0
    # Only files the static checks already call risky are detonated (cost and latency).
    verdicts: frozenset[str] = frozenset({"risky"})
    # The backend's score → verdict (CAPE's malscore, 0–10): above danger_score malicious, at
    # least suspicious_score suspicious. The process-wide MAILMOAT_CAPE_* defaults; a tenant's
    # sandbox_danger_score / sandbox_suspicious_score replace them (for_tenant).
    danger_score: float = 7.0
    suspicious_score: float = 4.0

    def for_tenant(self, tenant: TenantConfig | None) -> SandboxConfig:
        """This config with the tenant's thresholds where it sets them. A suspicious score
        above the danger score (only one of them set by the tenant) is capped at it."""
        if tenant is None:
            return self
        danger = self.danger_score if tenant.sandbox_danger_score is None \
            else tenant.sandbox_danger_score
        suspicious = self.suspicious_score if tenant.sandbox_suspicious_score is None \
            else tenant.sandbox_suspicious_score
        suspicious = min(suspicious, danger)
        if (danger, suspicious) == (self.danger_score, self.suspicious_score):
            return self
        return replace(self, danger_score=danger, suspicious_score=suspicious)

    def verdict_for(self, score: float) -> SandboxVerdict:
        return ("malicious" if score > self.danger_score else
                "suspicious" if score >= self.suspicious_score else "clean")


def consult(sandbox: Sandbox, data: bytes, filename: str | None, config: SandboxConfig, *,
            sleep: Callable[[float], None] = time.sleep,
            monotonic: Callable[[], float] = time.monotonic) -> tuple[str, str] | None:
    """(symbol, detail) for what the sandbox said, or None when it found nothing. With no
    verdict within wait_inline_seconds: SANDBOX_ANALYSING with the ticket as its detail."""
    started = monotonic()
    deadline = started + config.timeout_seconds
    inline = started + min(config.wait_inline_seconds, config.timeout_seconds)
    try:
        ticket = sandbox.submit(data, filename)
        while True:
            report = as_report(sandbox.poll(ticket))
            if report is not None:
                return judged(ticket, report, config)
            if monotonic() >= deadline:
                return ("SANDBOX_TIMEOUT", f"no verdict in {config.timeout_seconds:g} s")
            if inline < deadline and monotonic() >= inline:
                return ("SANDBOX_ANALYSING", ticket[:200])
            sleep(min(config.poll_seconds, max(0.0, min(inline, deadline) - monotonic())))
    except SandboxUnavailable as exc:
        return ("SCAN_FAILED", f"sandbox unavailable: {exc}"[:200])
    except Exception as exc:  # a failed sandbox is recorded, never silent
        return ("SCAN_FAILED", f"sandbox: {type(exc).__name__}: {exc}"[:200])


def as_report(answer: SandboxVerdict | SandboxReport | None) -> SandboxReport | None:
    return answer if isinstance(answer, SandboxReport) or answer is None else SandboxReport(answer)


def judged(ticket: str, report: SandboxReport,
           config: SandboxConfig | None = None) -> tuple[str, str] | None:
    """A verdict as a finding: (symbol, detail), or None for clean. With a config and a score,
    the config's (the tenant's) thresholds decide, not the word the backend chose."""
    if config is not None and report.score is not None:
        report = replace(report, verdict=config.verdict_for(report.score))
    if report.verdict in ("malicious", "suspicious"):
        symbol = "SANDBOX_MALICIOUS" if report.verdict == "malicious" else "SANDBOX_SUSPICIOUS"
        return (symbol, f"{ticket}: {report.detail}"[:300] if report.detail else ticket)
    if report.verdict == "clean":
        return None
    # a backend's unknown word is no verdict: fail closed
    return ("SCAN_FAILED", f"sandbox: unknown verdict {report.verdict!r}"[:200])
