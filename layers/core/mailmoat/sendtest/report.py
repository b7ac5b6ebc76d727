"""Compare what the gateway did with each send-test message (message log) against what it should do."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from mailmoat.config import TenantConfig
from mailmoat.ports import MessageLog, MessageRecord
from mailmoat.sendtest.runs import RunRecord, SentMessage
from mailmoat.states import FINAL_STATES, MessageState, Outcome

# States after which the gateway will not change the record by itself any more.
# The message log is read through its port (newest first); a run is looked for among this many.
LOOKUP_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class FileOutcome:
    filename: str
    verdict: str
    symbols: tuple[str, ...]
    action: str

    def describe(self) -> str:
        symbols = f" ({' '.join(self.symbols)})" if self.symbols else ""
        return f"{self.filename}: {self.verdict}/{self.action}{symbols}"


@dataclass(frozen=True, slots=True)
class Observed:
    """The facts of one message-log record that the expectations talk about."""

    state: str
    delivery: str  # this run's recipient's outcome, "" when none was recorded
    spf: str
    dkim: str
    dmarc: str
    banner: bool
    defang: bool
    files: tuple[FileOutcome, ...]
    subject: str
    findings: frozenset[str]

    @classmethod
    def from_record(cls, record: MessageRecord, recipient: str) -> Observed:
        report = record.report or {}
        auth = report.get("auth") or {}
        actions = set(report.get("actions") or [])
        deliveries = {k.lower(): str(v) for k, v in (report.get("deliveries") or {}).items()}
        files = tuple(
            FileOutcome(str(a.get("filename") or a.get("path") or "?"), str(a.get("verdict", "?")),
                        tuple(str(s) for s in a.get("symbols") or ()), str(a.get("action", "?")))
            for a in report.get("attachments") or [])
        return cls(state=record.state, delivery=deliveries.get(recipient.lower(), ""),
                   spf=str(auth.get("spf", "?")), dkim=str(auth.get("dkim", "?")),
                   dmarc=str(auth.get("dmarc", "?")), banner="banner" in actions,
                   defang="defang" in actions, files=files,
                   subject=record.subject or str(report.get("subject") or ""),
                   findings=frozenset(str(f.get("symbol")) for f in report.get("findings") or []))

    @property
    def antivirus_ran(self) -> bool:
        return "AV_DISABLED" not in self.findings

    def describe(self, expected: Expectation) -> str:
        """The same facts the expectation names, in the same words, so the two columns line up."""
        parts = [self.state if not self.delivery or Outcome.of(self.delivery) is Outcome.DELIVERED
                 else f"{self.state} ({self.delivery})", rewrite_words(self.banner, self.defang)]
        if expected.finding is not None:
            parts.append(expected.finding if expected.finding in self.findings
                         else f"no {expected.finding}")
        if expected.spf is not None or self.spf == "fail":
            parts.append(f"spf={self.spf}")
        if expected.subject is not None:
            parts.append("subject intact" if self.subject == expected.subject
                         else f"subject {self.subject!r}")
        parts.extend(f.describe() for f in self.files)
        return ", ".join(parts)


def rewrite_words(banner: bool, defang: bool) -> str:
    if banner and defang:
        return "banner + links defanged"
    if banner or defang:
        return "banner" if banner else "links defanged"
    return "no banner"


@dataclass(frozen=True, slots=True)
class FileExpectation:
    verdict: str
    symbol: str | None  # a symbol that must be among the file's symbols
    action: str

    def describe(self, filename: str) -> str:
        symbol = f" ({self.symbol})" if self.symbol else ""
        return f"{filename}: {self.verdict}/{self.action}{symbol}"

    def matches(self, observed: FileOutcome) -> bool:
        return (observed.verdict == self.verdict and observed.action == self.action
                and (self.symbol is None or self.symbol in observed.symbols))


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the product does with a test message under the default tenant policy (isolation
    "risky", links defanged only on failed authentication)."""

    state: str = "delivered"
    banner: bool = False
    defang: bool = False
    spf: str | None = None
    file: tuple[str, FileExpectation] | None = None  # (filename, what happens to it)
    subject: str | None = None
    note: str = ""
    finding: str | None = None  # a message-level symbol the report must carry

    def describe(self) -> str:
        parts = [self.state, rewrite_words(self.banner, self.defang)]
        if self.finding is not None:
            parts.append(self.finding)
        if self.spf is not None:
            parts.append(f"spf={self.spf}")
        if self.subject is not None:
            parts.append("subject intact")
        if self.file is not None:
            parts.append(self.file[1].describe(self.file[0]))
        return ", ".join(parts)

    def differences(self, seen: Observed) -> list[str]:
        why = []
        if seen.state != self.state:
            why.append(f"state {seen.state}, expected {self.state}")
        elif self.state == MessageState.DELIVERED and Outcome.of(seen.delivery) is not Outcome.DELIVERED:
            why.append(f"recipient outcome {seen.delivery or 'missing'}")
        if seen.banner != self.banner or seen.defang != self.defang:
            hint = ""
            if seen.banner and not self.banner:
                hint = ("; the sender's domain fails authentication from this host: use a --from "
                        "whose SPF allows it, or one without SPF/DMARC")
            why.append(f"auth spf={seen.spf} dkim={seen.dkim} dmarc={seen.dmarc} gave "
                       f"{'a banner' if seen.banner else 'no banner'} and "
                       f"{'defanged' if seen.defang else 'live'} links{hint}")
        if self.spf is not None and seen.spf != self.spf:
            hint = ""
            if seen.spf in ("none", "temperror"):
                hint = ("; the gateway found no SPF record for the sender's domain (offline DNS? "
                        "give it MAILMOAT_DNS_ZONE, see docs/send-test.md)")
            why.append(f"spf={seen.spf}, expected {self.spf}{hint}")
        if self.finding is not None and self.finding not in seen.findings:
            hint = ""
            if self.finding == "PPAP_PASSWORD_USED" and "pass" not in (seen.spf, seen.dkim):
                hint = (f"; spf={seen.spf} dkim={seen.dkim}: a follow-up opens a file only from an "
                        "authenticated sender domain (use a --from whose SPF allows this host)")
            why.append(f"no {self.finding} in the report{hint}")
        if self.subject is not None and seen.subject != self.subject:
            why.append("the subject did not survive decoding")
        if self.file is None and seen.files:
            why.append(f"unexpected attachment(s): {', '.join(f.filename for f in seen.files)}")
        if self.file is not None:
            name, wanted = self.file
            match = [f for f in seen.files if f.filename == name]
            if not match:
                why.append(f"{name} not in the report")
            elif not wanted.matches(match[0]):
                why.append(f"{name}: {match[0].verdict}/{match[0].action}, expected "
                           f"{wanted.verdict}/{wanted.action}")
        return why


def _eicar(seen: Observed | None) -> Expectation:
    # clamd unpacks the zip and knows EICAR. Without an antivirus the static checks still keep
    # the file out of the message: the member's .com extension is on the dangerous list.
    if seen is None or seen.antivirus_ran:
        return Expectation(file=("eicar.zip", FileExpectation("danger", "VIRUS", "delete")),
                           note="antivirus on")
    return Expectation(file=("eicar.zip", FileExpectation("risky", "DANGEROUS_EXTENSION", "isolate")),
                       note="no antivirus (AV_DISABLED): static checks only")


def expectation_for(sent: SentMessage, seen: Observed | None) -> Expectation:
    """DESIGN §4/§5 and policy.py applied to each test of the battery."""
    fixed: dict[str, Callable[[], Expectation]] = {
        "clean-text": Expectation,
        "html-links": Expectation,
        "clean-xlsx": lambda: Expectation(file=("price-list.xlsx", FileExpectation("safe", None, "keep"))),
        "aes-zip": lambda: Expectation(
            file=("quotation.zip", FileExpectation("encrypted", "ENCRYPTED_ARCHIVE", "isolate"))),
        "ppap-zip": lambda: Expectation(
            file=("estimate.zip", FileExpectation("encrypted", "ENCRYPTED_ARCHIVE", "isolate"))),
        "ppap-password": lambda: Expectation(finding="PPAP_PASSWORD_USED",
                                             note="PPAP pairing: opens ppap-zip's file"),
        "exe-as-xlsx": lambda: Expectation(
            file=("invoice.xlsx", FileExpectation("risky", "EXT_MISMATCH", "isolate"))),
        "velvetsweatshop-xlsx": lambda: Expectation(
            file=("report.xlsx", FileExpectation("danger", "VELVETSWEATSHOP", "delete"))),
        "spf-fail": lambda: Expectation(banner=True, defang=True, spf="fail"),
        "iso-2022-jp": lambda: Expectation(subject=sent.subject),
    }
    if sent.name == "eicar-zip":
        return _eicar(seen)
    if sent.name not in fixed:
        raise UnknownTest(sent.name)
    return fixed[sent.name]()


class UnknownTest(KeyError):
    """A run file naming a test this version does not have (edited, or from a newer version)."""


@dataclass(slots=True)
class Row:
    name: str
    arrived: str  # yes | no | pending | refused
    expected: str
    actual: str
    status: str  # OK | MISMATCH | MISSING
    why: list[str] = field(default_factory=list)
    note: str = ""
    record_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.name, "arrived": self.arrived, "expected": self.expected,
                "actual": self.actual, "status": self.status, "why": self.why, "note": self.note,
                "log_id": self.record_id}


@dataclass(slots=True)
class Report:
    run: RunRecord
    rows: list[Row]
    policy_notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return sum(r.status == "MISSING" for r in self.rows)

    @property
    def mismatched(self) -> int:
        return sum(r.status == "MISMATCH" for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0 all rows match; 2 some message never reached a final state; 1 otherwise."""
        if self.missing:
            return 2
        return 1 if self.mismatched else 0

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.run_id, "sent_at": self.run.sent_at, "server": self.run.server,
                "to": self.run.to, "rows": [r.to_dict() for r in self.rows],
                "summary": {"tests": len(self.rows), "ok": len(self.rows) - self.missing - self.mismatched,
                            "mismatch": self.mismatched, "missing": self.missing},
                "policy_notes": self.policy_notes, "exit_code": self.exit_code}


def policy_notes(tenant: TenantConfig) -> list[str]:
    """Tenant settings under which some rows differ from the default-policy expectations."""
    notes = []
    if tenant.isolation != "risky":
        notes.append(f"isolation = {tenant.isolation!r}")
    for flag in ("defang_all_links", "html_to_text", "zip_is_archive_type"):
        if getattr(tenant, flag):
            notes.append(f"{flag} = true")
    if tenant.dangerous_extensions_remove:
        notes.append(f"dangerous_extensions_remove = {tenant.dangerous_extensions_remove}")
    if tenant.rules:
        notes.append(f"{len(tenant.rules)} custom rule(s)")
    if tenant.allowed_senders or tenant.blocked_senders:
        notes.append("allowed/blocked senders")
    return notes


def build_row(sent: SentMessage, record: MessageRecord | None, recipient: str) -> Row:
    try:
        return _row(sent, record, recipient)
    except UnknownTest:
        return Row(sent.name, "?", "?", "?", "MISMATCH", why=["not a test this version knows"])


def _row(sent: SentMessage, record: MessageRecord | None, recipient: str) -> Row:
    if not sent.accepted:
        expectation = expectation_for(sent, None)
        return Row(sent.name, "refused", expectation.describe(), sent.reply, "MISMATCH",
                   why=["the gateway did not accept the message"])
    if record is None or record.state not in FINAL_STATES:
        expectation = expectation_for(sent, None)
        arrived = "no" if record is None else "pending"
        actual = "not in the message log" if record is None else f"still {record.state}"
        return Row(sent.name, arrived, expectation.describe(), actual, "MISSING",
                   record_id=record.id if record else None)
    seen = Observed.from_record(record, recipient)
    expectation = expectation_for(sent, seen)
    why = expectation.differences(seen)
    return Row(sent.name, "yes", expectation.describe(), seen.describe(expectation),
               "MISMATCH" if why else "OK", why=why, note=expectation.note, record_id=record.id)


def find_records(log: MessageLog, message_ids: Iterable[str]) -> dict[str, MessageRecord]:
    """The newest log record for each Message-ID we generated."""
    wanted = set(message_ids)
    found: dict[str, MessageRecord] = {}
    for record in log.recent(LOOKUP_LIMIT):  # newest first: the first one seen wins
        message_id = (record.message_id or "").strip()
        if message_id in wanted and message_id not in found:
            found[message_id] = record
    return found


def build_report(run: RunRecord, log: MessageLog, *, wait_seconds: float = 0.0,
                 poll_seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> Report:
    """Rows for every test of the run, after waiting up to `wait_seconds` for the accepted
    messages to reach a final state in the message log."""
    accepted = [m.message_id for m in run.messages if m.accepted]
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    while True:
        records = find_records(log, accepted)
        pending = [mid for mid in accepted
                   if mid not in records or records[mid].state not in FINAL_STATES]
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0:
            break
        sleep(min(poll_seconds, remaining))
    return Report(run, [build_row(m, records.get(m.message_id), run.to) for m in run.messages])


# --- text output ------------------------------------------------------------------------------

def _width(text: str) -> int:
    # Japanese in a subject takes two terminal columns per character.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(width - _width(text), 0)


def _table(cells: list[tuple[str, ...]]) -> list[str]:
    widths = [max(_width(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]


def print_report(report: Report, out: TextIO, *, columns: int | None = None,
                 antivirus_hint: bool = True) -> None:
    """One line per test; on a terminal narrower than that (`columns`), expected and actual go on
    two lines of their own under each test so that nothing wraps."""
    run = report.run
    print(f"mailmoat send-test report: run {run.run_id}, sent {run.sent_at} to {run.to} via "
          f"{run.server}{' (STARTTLS)' if run.starttls else ''}", file=out)
    wide = _table([("TEST", "ARRIVED", "EXPECTED", "ACTUAL", "RESULT"),
                   *((r.name, r.arrived, r.expected, r.actual, r.status) for r in report.rows)])
    stacked = columns is not None and max(_width(line) for line in wide) > columns
    lines = _table([("TEST", "ARRIVED", "RESULT"), *((r.name, r.arrived, r.status) for r in report.rows)]) \
        if stacked else wide
    print(lines[0], file=out)
    for line, row in zip(lines[1:], report.rows, strict=True):
        print(line, file=out)
        if stacked:
            print(f"    expected: {row.expected}", file=out)
            print(f"    actual:   {row.actual}", file=out)
        for why in row.why:
            print(f"    ! {why}", file=out)
    if report.policy_notes:
        print(f"tenant policy differs from the defaults the expectations assume: "
              f"{', '.join(report.policy_notes)}", file=out)
    notes = sorted({r.note for r in report.rows if r.note})
    if antivirus_hint and notes:
        print(f"note: {'; '.join(notes)}", file=out)
    ok = len(report.rows) - report.missing - report.mismatched
    print(f"{len(report.rows)} tests: {ok} OK, {report.mismatched} MISMATCH, {report.missing} MISSING",
          file=out)
    if report.missing:
        print("Missing messages: still queued, not processed yet, or this message log is not the "
              "gateway's (run --report where the gateway's data directory or AWS tables are; "
              "--wait SECONDS waits for them).", file=out)
