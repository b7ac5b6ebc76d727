"""The pipeline as data: named stages in order over one MessageContext, timed and traced."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mailmoat.context import Disposition, MessageContext, StageTiming
from mailmoat.message import WalkLimits, encoding_findings, header_text, parse

if TYPE_CHECKING:
    from mailmoat.config import GatewayConfig, TenantConfig
    from mailmoat.ports import (
        AccountStore,
        Antivirus,
        ArchiveStore,
        AttemptStore,
        AuditLog,
        BlobStore,
        Clock,
        Directory,
        GeoIp,
        IsolationStore,
        KeepMailStore,
        Mailer,
        MessageLog,
        PdfConverter,
        PolicyStore,
        Resolver,
        Sandbox,
        SpamStore,
    )
    from mailmoat.scan.sandbox import SandboxConfig
    from mailmoat.settings import Settings

log = logging.getLogger("mailmoat.pipeline")

STAGE_NAMES: tuple[str, ...] = ("authenticate", "scan", "isolate", "rewrite", "deliver")
# Stages that read the whole message; skipped for one beyond the bounds (it is quarantined).
_READS_WHOLE_MESSAGE = frozenset({"authenticate", "scan", "rewrite"})
PART_LINE_FACTOR = 4


@dataclass(slots=True)
class AdminStores:
    """What the admin console keeps: accounts (None where an identity provider signs admins
    in), the audit trail, saved tenant policy, and the key that signs its cookies."""

    accounts: AccountStore | None
    audit: AuditLog
    policy: PolicyStore
    session_secret: Callable[[], bytes]
    # Sign-out of federated (Cognito) admins voids their earlier sessions; None locally.
    federated_sessions: Any = None
    federated: bool = False  # admins sign in through the identity provider (Cognito)


@dataclass(slots=True)
class Services:
    """What stages and services may use. Built only by a composition root (mailmoat.bootstrap);
    stages never build adapters. Every field is set by the root; None says "not in this
    deployment" and each user of that field says what it does then (fails closed or skips)."""

    settings: Settings
    config: GatewayConfig
    blobs: BlobStore
    directory: Directory
    log: MessageLog
    mailer_for: Callable[[TenantConfig], Mailer]  # the tenant's delivery path
    resolver: Resolver
    clock: Clock
    geoip: GeoIp | None  # None: no GeoIP database, hops get no country
    antivirus: Antivirus | None  # None: AV_DISABLED (refused in production mode)
    sandbox: Sandbox | None  # None: no detonation service
    sandbox_config: SandboxConfig
    isolation: IsolationStore | None  # None: no isolated-file table here (isolate quarantines)
    spam: SpamStore | None  # None: no spam store; a copy to hold is held as a whole message
    keepmail: KeepMailStore | None  # None: keep-mail unavailable (KEEPMAIL_UNAVAILABLE)
    archive: ArchiveStore | None  # None: archiving tenants get ARCHIVE_UNAVAILABLE
    notices: Mailer | None  # the gateway's own mail to outside senders (DSNs); None: not sent
    # The gateway's own mail to a tenant's recipient (keep-mail codes, spam digests): the
    # tenant's mailer locally, the notice path (SES as the postmaster) on AWS.
    own_mail_for: Callable[[TenantConfig], Mailer]
    # The gateway's own mail to an address outside the tenant's mailboxes (a keep-mail code to
    # the recipient's alternate address): the tenant's path locally, SES's notice path on AWS.
    outside_mail_for: Callable[[TenantConfig], Mailer]
    # What the tenant's delivery path does to a copy before it is sealed (SES delivery rewrites
    # From, which the ARC seal covers); None: copies are sealed as they are.
    before_seal: Callable[[TenantConfig], Callable[[bytes], bytes] | None]
    admin: AdminStores
    # Sign-in counters (mailmoat.attempts) of the portal, keep-mail and console; None: every
    # password or code check is refused.
    attempts: AttemptStore | None
    # convert-pdf and the portal's "Download as PDF"; None: CONVERT_UNAVAILABLE, the original
    # stays isolated (fail closed).
    converter: PdfConverter | None = None

    def tenant(self, ctx: MessageContext) -> TenantConfig:
        return self.config.tenant(ctx.tenant)


class Stage(Protocol):
    name: str

    def run(self, ctx: MessageContext, services: Services) -> None: ...


_REGISTRY: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    _REGISTRY[stage.name] = stage
    return stage


def get_stage(name: str) -> Stage:
    if name not in _REGISTRY:
        # Import on first use so a Lambda handler only pays for the stage it runs.
        import importlib

        importlib.import_module(f"mailmoat.stages.{name}")
    return _REGISTRY[name]


def header_block_size(raw: bytes) -> int:
    """Bytes before the first empty line (CRLF or bare LF), or the whole message if none."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(raw)


def prepare(ctx: MessageContext, services: Services) -> None:
    """Parse once and fill the header-derived fields every stage reads."""
    if ctx.parsed is not None:
        return
    limits = services.settings.limits
    walk_limits = WalkLimits(max_parts=limits.max_parts, max_depth=limits.max_depth)
    header_bytes = header_block_size(ctx.raw)
    if header_bytes > limits.max_header_bytes:
        ctx.add("HEADER_LIMIT", "message", f"header block over {limits.max_header_bytes} bytes")
    # Every MIME part needs a "--boundary" line; far more of them than max_parts means the
    # stdlib parser would build hundreds of thousands of parts before the walk could stop it.
    delimiters = ctx.raw.count(b"\n--")
    if delimiters > PART_LINE_FACTOR * limits.max_parts:
        ctx.add("MIME_LIMIT", "message", f"{delimiters} boundary-like lines")
    if ctx.has("HEADER_LIMIT") or ctx.has("MIME_LIMIT"):
        # Beyond the bounds: read only a bounded head for the log (sender, subject), and let
        # the decision quarantine the message untouched; no stage parses the rest.
        ctx.beyond_limits = True
        head = ctx.raw[:min(header_bytes, limits.max_header_bytes)].rstrip(b"\r\n")
        parsed = parse(head + b"\r\n\r\n", walk_limits)
    else:
        parsed = parse(ctx.raw, walk_limits)
    ctx.parsed = parsed
    for symbol, target, detail in parsed.findings:
        ctx.add(symbol, target, detail)
    if parsed.truncated or ctx.has("MIME_PARSE_FAILED"):
        ctx.beyond_limits = True  # the walk could not reach the end: nothing may act on half
    # Decode every part a stage will read now (the bytes are cached on the part), so broken
    # base64 / quoted-printable is a finding before any stage decides anything.
    for part in parsed.parts:
        if part.kind in ("attachment", "body", "inline-image"):
            part.payload()
            for defect in dict.fromkeys(part.decode_defects):
                ctx.add("INVALID_ENCODING", part.path, defect)
            for symbol, detail in encoding_findings(part):
                ctx.add(symbol, part.path, detail)
    msg = parsed.message
    ctx.message_id = header_text(msg, "message-id")
    ctx.subject = header_text(msg, "subject")
    ctx.from_header = header_text(msg, "from")


def run_pipeline(ctx: MessageContext, services: Services,
                 stages: Sequence[str] = STAGE_NAMES) -> MessageContext:
    """Run the named stages in order. A stage that raises holds the message (fail closed):
    it stays stored, is recorded, and can be re-driven; later stages are skipped."""
    started = time.perf_counter()
    try:
        prepare(ctx, services)
    except Exception as exc:  # hostile input must not crash the gateway
        log.exception("prepare failed", extra={"message_id": ctx.id})
        ctx.add("STAGE_FAILED", "message", f"prepare: {type(exc).__name__}: {exc}"[:300])
        ctx.hold("the message could not be parsed")
    ctx.trace.append(StageTiming("prepare", (time.perf_counter() - started) * 1000))
    failed = ctx.disposition == Disposition.HELD
    for name in stages:
        if failed:
            ctx.trace.append(StageTiming(name, 0.0, "skipped", "an earlier stage failed"))
            continue
        if ctx.beyond_limits and name in _READS_WHOLE_MESSAGE:
            ctx.trace.append(StageTiming(name, 0.0, "skipped", "message beyond the bounds"))
            continue
        stage = get_stage(name)
        t0 = time.perf_counter()
        try:
            stage.run(ctx, services)
        except Exception as exc:
            failed = True
            detail = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("stage failed", extra={"message_id": ctx.id, "stage": name})
            ctx.add("STAGE_FAILED", "message", f"{name}: {detail}")
            ctx.hold(f"stage {name} failed")
            ctx.trace.append(StageTiming(name, (time.perf_counter() - t0) * 1000, "error", detail))
            continue
        ctx.trace.append(StageTiming(name, (time.perf_counter() - t0) * 1000))
    return ctx
