"""DESIGN §5 as one function: authentication results → warn (banner) and defang (links)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AuthDecision:
    warn: bool
    defang: bool
    reasons: list[str] = field(default_factory=list)


def decide(*, spf: str, dkim: str, dmarc: str, dmarc_policy: str | None,
           check_failed: bool = False) -> AuthDecision:
    """Any of SPF, DKIM, DMARC = fail → banner and neutralised links. Exception: DMARC is the
    only failure and the domain publishes p=none → banner only.

    "fail" means the word fail. softfail, neutral, none and the error results do not count:
    they say nothing was proven, not that the sender is false, and DMARC (which ends in fail
    when nothing aligned passes) is what catches a forged From. DKIM counts as failed only
    when no signature passed (RFC 6376 §6.1). A check that crashed fails closed.
    """
    failed = [name for name, result in (("spf", spf), ("dkim", dkim), ("dmarc", dmarc))
              if result == "fail"]
    if check_failed:
        return AuthDecision(True, True, [*failed, "check-failed"])
    if not failed:
        return AuthDecision(False, False, [])
    if failed == ["dmarc"] and (dmarc_policy or "none") == "none":
        return AuthDecision(True, False, failed)
    return AuthDecision(True, True, failed)
