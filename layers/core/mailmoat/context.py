"""Typed state of one message on its way through the pipeline, and its JSON report (DESIGN §9)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailmoat.message import ParsedMessage


class Verdict(enum.StrEnum):
    """Attachment verdicts of DESIGN §4, ordered from harmless to worst."""

    SAFE = "safe"
    RISKY = "risky"
    ENCRYPTED = "encrypted"
    UNSUPPORTED = "unsupported"
    # Sent to a sandbox, no verdict yet (mailmoat.sandbox_verdicts decides it later): isolated,
    # never downloadable; only danger ranks above it.
    ANALYSING = "analysing"
    DANGER = "danger"

    @property
    def severity(self) -> int:
        return _VERDICT_ORDER.index(self)

    @staticmethod
    def worst(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict:
        return max(verdicts, key=lambda v: v.severity, default=Verdict.SAFE)


_VERDICT_ORDER = [Verdict.SAFE, Verdict.RISKY, Verdict.ENCRYPTED, Verdict.UNSUPPORTED,
                  Verdict.ANALYSING, Verdict.DANGER]


class Disposition(enum.StrEnum):
    """Where a message ends. Every accepted message ends in exactly one of these."""

    DELIVER = "deliver"
    QUARANTINE = "quarantine"
    DROP = "drop"
    HELD = "held"


class AttachmentAction(enum.StrEnum):
    KEEP = "keep"
    ISOLATE = "isolate"
    DELETE = "delete"
    CONVERT = "convert"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detection step noticed. Symbols are UPPER_SNAKE (DESIGN §9)."""

    symbol: str
    target: str = "message"  # "message" or an attachment path such as "2" or "3.2"
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"symbol": self.symbol, "target": self.target, "detail": self.detail}


@dataclass(slots=True)
class Envelope:
    """What the SMTP session said, as opposed to what the headers claim."""

    client_ip: str | None = None
    helo: str | None = None
    mail_from: str | None = None
    rcpt_to: list[str] = field(default_factory=list)
    # The session's TLS after STARTTLS ("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"); None: clear.
    tls: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_ip": self.client_ip,
            "helo": self.helo,
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to),
            "tls": self.tls,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        return cls(
            client_ip=data.get("client_ip"),
            helo=data.get("helo"),
            mail_from=data.get("mail_from"),
            rcpt_to=list(data.get("rcpt_to") or []),
            tls=data.get("tls"),
        )


@dataclass(slots=True)
class AuthResult:
    """The authenticate stage's outcome; `warn` and `defang` drive the rewrite stage."""

    spf: str = "none"
    dkim: str = "none"
    dmarc: str = "none"
    dmarc_policy: str | None = None
    arc: str = "none"
    warn: bool = False
    defang: bool = False
    # Verdicts another party already computed (SES headers on AWS), recorded beside ours.
    upstream: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spf": self.spf,
            "dkim": self.dkim,
            "dmarc": self.dmarc,
            "dmarc_policy": self.dmarc_policy,
            "arc": self.arc,
            "warn": self.warn,
            "defang": self.defang,
            "upstream": dict(self.upstream),
            "details": dict(self.details),
        }


@dataclass(slots=True)
class Hop:
    """One `Received` hop with the public IP it names and that IP's country."""

    ip: str | None
    country: str | None = None
    from_name: str | None = None
    by_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "country": self.country, "from": self.from_name, "by": self.by_name}


@dataclass(slots=True)
class SpamResult:
    verdict: str = "unknown"  # ham | spam | unknown
    action: str = "none"  # none | tag | quarantine: the tenant's, when applied to a recipient
    score: float | None = None
    # Which verdict sources said spam ("rspamd", "dnsbl:<zone>", "ses"), and what every source
    # that ran answered (source -> short outcome).
    sources: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)
    # Per recipient (lower-case): tag | quarantine | off (filter off) | allowed (allow list).
    # Empty for ham, and for a message analysed without recipients.
    recipients: dict[str, str] = field(default_factory=dict)

    def treatment(self, recipient: str) -> str:
        """What the spam decision does to this recipient's copy: tag, quarantine or none."""
        if not self.recipients:  # no envelope recipients: the message-level action
            return self.action if self.action in ("tag", "quarantine") else "none"
        value = self.recipients.get(recipient.lower(), "none")
        return value if value in ("tag", "quarantine") else "none"

    def to_dict(self) -> dict[str, Any]:
        # Keys are the field names: the AWS runtime rebuilds the result with SpamResult(**d).
        return {"verdict": self.verdict, "action": self.action, "score": self.score,
                "sources": list(self.sources), "checks": dict(self.checks),
                "recipients": dict(self.recipients)}


@dataclass(slots=True)
class MemberReport:
    """A file inside an archive attachment."""

    name: str
    verdict: Verdict = Verdict.SAFE
    symbols: list[str] = field(default_factory=list)
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": str(self.verdict), "symbols": list(self.symbols),
                "size": self.size}


@dataclass(slots=True)
class AttachmentReport:
    """One attachment (DESIGN §3) with the scan verdict and the action decided for it."""

    path: str
    filename: str | None
    declared_type: str
    size: int
    sha256: str
    detected_type: str | None = None
    verdict: Verdict = Verdict.SAFE
    symbols: list[str] = field(default_factory=list)
    action: AttachmentAction = AttachmentAction.KEEP
    members: list[MemberReport] = field(default_factory=list)
    # With action CONVERT: which conversion the custom rule asked for ("remove-macros",
    # "convert-pdf"). Decided and carried out within the isolate stage, so not serialised.
    conversion: str | None = None

    def add_symbol(self, symbol: str) -> None:
        if symbol not in self.symbols:
            self.symbols.append(symbol)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "filename": self.filename,
            "declared_type": self.declared_type,
            "detected_type": self.detected_type,
            "size": self.size,
            "sha256": self.sha256,
            "verdict": str(self.verdict),
            "symbols": list(self.symbols),
            "action": str(self.action),
            "members": [m.to_dict() for m in self.members],
        }


@dataclass(slots=True)
class StageTiming:
    """One line of the trace: which stage ran, how long, and how it ended."""

    stage: str
    duration_ms: float
    outcome: str = "ok"  # ok | skipped | error
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "duration_ms": round(self.duration_ms, 3),
                "outcome": self.outcome, "detail": self.detail}


@dataclass(slots=True)
class MessageContext:
    """Everything the stages know about one message. Stages read it and add to it.

    `raw` is never modified; transform stages write `output`. Nothing here knows
    whether it runs on AWS or locally.
    """

    id: str  # the gateway's own id (storage key), not the Message-ID header
    raw: bytes
    envelope: Envelope = field(default_factory=Envelope)
    tenant: str | None = None
    message_id: str | None = None  # the Message-ID header
    subject: str | None = None
    from_header: str | None = None
    findings: list[Finding] = field(default_factory=list)
    auth: AuthResult = field(default_factory=AuthResult)
    route: list[Hop] = field(default_factory=list)
    spam: SpamResult = field(default_factory=SpamResult)
    attachments: list[AttachmentReport] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    portal_url: str | None = None
    disposition: Disposition = Disposition.DELIVER
    trace: list[StageTiming] = field(default_factory=list)
    output: bytes | None = None
    # Per-recipient bodies when they differ (the isolate notice carries each recipient's own
    # portal token); deliver uses outputs[rcpt] when present, else output, else raw.
    outputs: dict[str, bytes] = field(default_factory=dict)
    deliveries: dict[str, str] = field(default_factory=dict)  # recipient -> outcome
    parsed: ParsedMessage | None = field(default=None, repr=False)  # set by pipeline.prepare
    beyond_limits: bool = False  # too big to parse safely: quarantined unprocessed

    def add(self, symbol: str, target: str = "message", detail: str = "") -> Finding:
        finding = Finding(symbol, target, detail)
        self.findings.append(finding)
        return finding

    def has(self, symbol: str) -> bool:
        return any(f.symbol == symbol for f in self.findings)

    def add_action(self, action: str) -> None:
        if action not in self.actions:
            self.actions.append(action)

    def hold(self, reason: str, target: str = "message") -> None:
        """Fail closed: the message stays with us, visible to the admin and re-drivable."""
        self.add("HELD", target, reason)
        self.disposition = Disposition.HELD

    @property
    def final_disposition(self) -> Disposition:
        """Where the message as a whole ends. Spam quarantine is per recipient (their copies are
        held at delivery), so a message every recipient's copy of which is held ends quarantined."""
        if self.disposition == Disposition.DELIVER and self.spam.action == "quarantine":
            rcpts = {r.lower() for r in self.envelope.rcpt_to}
            if all(self.spam.treatment(r) == "quarantine" for r in rcpts or {""}):
                return Disposition.QUARANTINE
        return self.disposition

    def to_report(self) -> dict[str, Any]:
        """The JSON report of DESIGN §9. Fields may be added, never renamed."""
        return {
            "message_id": self.message_id,
            "disposition": str(self.final_disposition),
            "auth": self.auth.to_dict(),
            "route": [h.to_dict() for h in self.route],
            "spam": self.spam.to_dict(),
            "attachments": [a.to_dict() for a in self.attachments],
            "actions": list(self.actions),
            "portal_url": self.portal_url,
            # additions beyond the contract
            "id": self.id,
            "tenant": self.tenant,
            "envelope": self.envelope.to_dict(),
            "subject": self.subject,
            "from": self.from_header,
            "findings": [f.to_dict() for f in self.findings],
            "trace": [t.to_dict() for t in self.trace],
            "deliveries": dict(self.deliveries),
        }
