"""The console dashboard's numbers: one tenant's message log over the last 1, 7 or 30 days,
counted from the MessageLog port (the same on SQLite and DynamoDB)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

from mailmoat.ports import MessageLog, MessageRecord
from mailmoat.states import MessageState

PERIODS = (1, 7, 30)
# Records read per dashboard: a console page answers in a request's time; beyond it the page
# says the numbers cover the newest MAX_RECORDS messages.
MAX_RECORDS = 20_000
TOP = 10  # rows in each "top" list


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime  # UTC; an hour (1-day period) or a day
    count: int


@dataclass(slots=True)
class DashboardStats:
    tenant: str | None
    days: int
    since: datetime
    until: datetime
    unit: str  # "hour" | "day": what one bucket spans
    total: int = 0
    buckets: list[Bucket] = field(default_factory=list)
    dispositions: list[tuple[str, int]] = field(default_factory=list)
    verdicts: list[tuple[str, int]] = field(default_factory=list)  # per attachment
    top_symbols: list[tuple[str, int]] = field(default_factory=list)  # per message
    top_sender_domains: list[tuple[str, int]] = field(default_factory=list)
    route_countries: list[tuple[str, int]] = field(default_factory=list)  # per message
    held: int = 0  # messages the pipeline could not process (state held)
    isolated: int = 0  # attachments moved to the portal
    isolated_messages: int = 0
    truncated: bool = False  # more than MAX_RECORDS messages in the period


def period_days(value: Any) -> int:
    """A requested period, or 7 when it is not one of PERIODS."""
    try:
        days = int(value)
    except (TypeError, ValueError):
        return 7
    return days if days in PERIODS else 7


def window(days: int, now: datetime) -> tuple[datetime, datetime, str, int]:
    """[since, until), the bucket unit and count: 24 hours to the end of this hour, or `days`
    calendar days (UTC) to the end of today."""
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    if days == 1:
        until = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return until - timedelta(hours=24), until, "hour", 24
    until = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return until - timedelta(days=days), until, "day", days


def dashboard_stats(log: MessageLog, tenant: str | None, days: int, now: datetime,
                    *, max_records: int = MAX_RECORDS) -> DashboardStats:
    days = period_days(days)
    since, until, unit, count = window(days, now)
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    records = log.received_between(tenant, since, until, max_records + 1)
    stats = DashboardStats(tenant, days, since, until, unit, truncated=len(records) > max_records)
    per_bucket = [0] * count
    dispositions: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    symbols: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    countries: Counter[str] = Counter()
    for record in records[:max_records]:
        if record.state == MessageState.SPLIT:  # its per-tenant messages are counted instead
            continue
        stats.total += 1
        at = _utc(record.received_at)
        index = int((at - since) // step)
        if 0 <= index < count:
            per_bucket[index] += 1
        dispositions[record.disposition or _pending(record)] += 1
        if record.state == MessageState.HELD:
            stats.held += 1
        report = record.report if isinstance(record.report, dict) else {}
        attachments = [a for a in report.get("attachments") or [] if isinstance(a, dict)]
        verdicts.update(str(a.get("verdict") or "unknown") for a in attachments)
        isolated = sum(1 for a in attachments if a.get("action") == "isolate")
        stats.isolated += isolated
        stats.isolated_messages += 1 if isolated else 0
        symbols.update(_symbols(report, attachments))
        domain = sender_domain(record)
        if domain:
            domains[domain] += 1
        countries.update({str(h["country"]).upper()[:8] for h in report.get("route") or []
                          if isinstance(h, dict) and h.get("country")})
    stats.buckets = [Bucket(since + i * step, n) for i, n in enumerate(per_bucket)]
    stats.dispositions = _ranked(dispositions, len(dispositions))
    stats.verdicts = _ranked(verdicts, len(verdicts))
    stats.top_symbols = _ranked(symbols, TOP)
    stats.top_sender_domains = _ranked(domains, TOP)
    stats.route_countries = _ranked(countries, TOP)
    return stats


def sender_domain(record: MessageRecord) -> str:
    """The From header's domain (what the recipients saw), else the envelope sender's."""
    report = record.report if isinstance(record.report, dict) else {}
    for candidate in (str(report.get("from") or ""), record.mail_from or ""):
        address = parseaddr(candidate)[1] or candidate
        domain = address.rpartition("@")[2].strip().strip(">").lower().rstrip(".")
        if "@" in address and domain:
            return domain[:253]
    return ""


def _symbols(report: dict[str, Any], attachments: list[dict[str, Any]]) -> set[str]:
    found = {str(f.get("symbol")) for f in report.get("findings") or []
             if isinstance(f, dict) and f.get("symbol")}
    found |= {str(s) for a in attachments for s in a.get("symbols") or []}
    return {s[:80] for s in found}


def _pending(record: MessageRecord) -> str:
    return "held" if record.state == MessageState.HELD else "pending"


def _ranked(counter: Counter[str], n: int) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
