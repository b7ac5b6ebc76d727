"""`mailmoat doctor`: is this deployment set up to work? One line per check, OK/WARN/FAIL/SKIP
with the fix, and a non-zero exit when any check fails.

The checks (doctor.checks) judge answers that come through ports: the project's Resolver for
DNS, and the small probe protocols below for SMTP and HTTP, so that tests give a zone file and
loopback servers. doctor.cli gathers what the checks need for the local or the AWS runtime.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"  # works now, needs attention (a certificate soon due, old signatures)
    FAIL = "FAIL"  # broken, or a protection that should run cannot
    SKIP = "SKIP"  # does not apply to this runtime or configuration (said, never faked)


@dataclass(frozen=True, slots=True)
class Result:
    name: str  # mx | arc-key | clamd | libmagic | delivery | portal | certificate | disk
    target: str  # the domain, host, URL or path checked
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name:<12} {self.target}: {self.detail}"
        return f"{text}\n      fix: {self.fix}" if self.fix and self.status is not Status.OK else text

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "target": self.target, "status": str(self.status),
                "detail": self.detail, "fix": self.fix}


def failed(results: Iterable[Result]) -> bool:
    return any(r.status is Status.FAIL for r in results)


def summary(results: Iterable[Result]) -> str:
    counts = {s: 0 for s in Status}
    for r in results:
        counts[r.status] += 1
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no checks"


@dataclass(frozen=True, slots=True)
class TlsReport:
    """What one SMTP connection to a delivery host showed, up to STARTTLS and no further."""

    connected: bool
    error: str = ""  # what stopped the dialogue (refused, banner not 220, timeout …)
    starttls: bool = False  # offered in the EHLO answer
    verified: bool = False  # the handshake verified the chain and the host name
    verify_error: str = ""
    tls_version: str = ""
    not_after: datetime | None = None  # the verified certificate's expiry (UTC)


class TlsProbe(Protocol):
    """Connect, EHLO, STARTTLS with certificate verification against `host`; never MAIL."""

    def probe(self, host: str, port: int) -> TlsReport: ...


@dataclass(frozen=True, slots=True)
class HttpReport:
    status: int | None  # None: no HTTP answer
    error: str = ""
    not_after: datetime | None = None  # https: the verified certificate's expiry (UTC)


class HttpProbe(Protocol):
    """One bounded GET of `url` (https verified), redirects not followed."""

    def get(self, url: str) -> HttpReport: ...
