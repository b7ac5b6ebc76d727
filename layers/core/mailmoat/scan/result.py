"""What analysing one file yields: symbols, members, and the verdict they add up to."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mailmoat.context import MemberReport, Verdict
from mailmoat.settings import Limits

# Symbol → the verdict it implies at least. One table, so a reader sees every rule.
SYMBOL_VERDICT: dict[str, Verdict] = {
    "VIRUS": Verdict.DANGER,
    "VELVETSWEATSHOP": Verdict.DANGER,
    "SANDBOX_MALICIOUS": Verdict.DANGER,
    "SANDBOX_ANALYSING": Verdict.ANALYSING,  # submitted, verdict later (mailmoat.sandbox_verdicts)
    # The analysis that runs here (issue 16): Excel 4.0 macros that run or download code, and
    # YARA rules marked danger. SANDBOX_XLM_URL/_AUTO, SANDBOX_VBA_IOC, SANDBOX_YARA: risky.
    "SANDBOX_XLM_EXEC": Verdict.DANGER,
    "SANDBOX_YARA_DANGER": Verdict.DANGER,
    "ENCRYPTED_OFFICE_LEGACY": Verdict.UNSUPPORTED,
    "ENCRYPTION_SPIN_LIMIT": Verdict.UNSUPPORTED,  # a password try would cost minutes: not tried
    "ENCRYPTED_ARCHIVE": Verdict.ENCRYPTED,
    "ENCRYPTED_OFFICE": Verdict.ENCRYPTED,
    "ENCRYPTED_PDF": Verdict.ENCRYPTED,
}
# Symbols that only inform; everything else not in SYMBOL_VERDICT makes a file risky
# (an unknown symbol failing towards caution).
INFO_SYMBOLS = frozenset({"PDF_OWNER_PASSWORD", "OFFICE_PROTECTION", "AV_CLEAN", "ARCHIVE",
                          "SANDBOX_CLEAN"})


def verdict_of(symbols: list[str] | set[str]) -> Verdict:
    verdicts = [SYMBOL_VERDICT.get(s, Verdict.RISKY) for s in symbols if s not in INFO_SYMBOLS]
    return Verdict.worst(verdicts)


@dataclass(slots=True)
class Hit:
    symbol: str
    detail: str = ""
    member: str | None = None  # the member name ("a.zip!b.exe") when found inside an archive


@dataclass(slots=True)
class FileResult:
    """Analysis of one file's content (cacheable by SHA-256) plus its members."""

    detected_type: str
    hits: list[Hit] = field(default_factory=list)
    members: list[MemberReport] = field(default_factory=list)
    cacheable: bool = True

    def add(self, symbol: str, detail: str = "", member: str | None = None) -> None:
        self.hits.append(Hit(symbol, detail, member))
        if symbol in {"SCAN_FAILED", "ARCHIVE_LIMIT"}:
            self.cacheable = False  # another attempt (with more time) may get further

    @property
    def symbols(self) -> list[str]:
        out: list[str] = []
        for h in self.hits:
            if h.symbol not in out:
                out.append(h.symbol)
        for m in self.members:
            for s in m.symbols:
                if s not in out:
                    out.append(s)
        return out

    @property
    def own_symbols(self) -> list[str]:
        return list(dict.fromkeys(h.symbol for h in self.hits if h.member is None))

    @property
    def verdict(self) -> Verdict:
        """The worst of its own symbols and its members' verdicts (an archive is its worst member)."""
        own = verdict_of(self.own_symbols)
        return Verdict.worst([own, *(m.verdict for m in self.members)])


class Budget:
    """Archive bounds (STYLE habit 4) for one attachment, plus the message's wall-time deadline."""

    def __init__(self, limits: Limits, deadline: float | None = None) -> None:
        self.limits = limits
        self.deadline = deadline if deadline is not None else time.monotonic() + limits.scan_seconds
        self.members = 0
        self.expanded = 0
        # Once one bound is hit the whole attachment stops: a bomb's siblings are not walked.
        self.stopped: str | None = None

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline


class LimitReached(Exception):
    """Raised inside an archive reader to stop at a bound; becomes ARCHIVE_LIMIT, never a crash."""
