"""The composition root: bootstrap(settings) is the only place adapters are chosen."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mailmoat.config import GatewayConfig, TenantConfig, load_config
from mailmoat.context import Disposition, Envelope, MessageContext
from mailmoat.pipeline import STAGE_NAMES, Services, run_pipeline
from mailmoat.ports import Mailer, MessageRecord, Recipient, Resolver
from mailmoat.settings import Settings

log = logging.getLogger("mailmoat.runtime")


def new_message_id(now: datetime | None = None) -> str:
    """Time-sortable and unguessable: 20261127T204700Z-<64 random bits>."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(8)}"


RETRIES_EXHAUSTED = "delivery retries exhausted"


def raw_key(message_id: str) -> str:
    return f"raw/{message_id}"


@dataclass(slots=True)
class Runtime:
    settings: Settings
    services: Services

    # --- ingress side ---------------------------------------------------------------------
    def tenant_for(self, envelope: Envelope) -> str | None:
        for rcpt in envelope.rcpt_to:
            tenant = self.services.directory.tenant_for_domain(rcpt.rpartition("@")[2])
            if tenant:
                return tenant
        return None

    def is_known_recipient(self, address: str) -> bool:
        return self.services.directory.recipient(address) is not None

    def accept(self, raw: bytes, envelope: Envelope, message_id: str | None = None) -> str:
        """Store the raw message and its log row durably. Only after this returns may the
        ingress say 250: from here on the message cannot be lost."""
        message_id = message_id or new_message_id()
        self.services.blobs.put(raw_key(message_id), raw)
        self.services.log.accept(MessageRecord(
            id=message_id, received_at=self.services.clock.now(), state="accepted",
            mail_from=envelope.mail_from, rcpt_to=list(envelope.rcpt_to),
            client_ip=envelope.client_ip, helo=envelope.helo, tenant=self.tenant_for(envelope),
            size=len(raw)))
        return message_id

    # --- processing -----------------------------------------------------------------------
    def analyse(self, raw: bytes, envelope: Envelope, *, message_id: str | None = None,
                tenant: str | None = None, stages: Sequence[str] = STAGE_NAMES) -> MessageContext:
        ctx = MessageContext(id=message_id or new_message_id(), raw=raw, envelope=envelope,
                             tenant=tenant or self.tenant_for(envelope))
        return run_pipeline(ctx, self.services, stages)

    def process_stored(self, message_id: str) -> MessageContext | None:
        """Run the pipeline for a stored message and record the outcome. Idempotent: a re-run
        after a crash re-derives every decision and delivers only to recipients not yet done."""
        logbook = self.services.log
        record = logbook.get(message_id)
        if record is None:
            return None
        try:
            raw = self.services.blobs.get(raw_key(message_id))
        except FileNotFoundError:
            logbook.update(message_id, state="held", error="raw message missing from the store")
            return None
        except OSError as exc:
            # A store hiccup (EIO, a timeout) is not the message's fault: retry with backoff like
            # a 4xx, and hold only when the retries are used up.
            attempts = record.attempts + 1
            reason = f"raw message unreadable: {exc}"[:300]
            if attempts >= self.settings.delivery_max_attempts:
                logbook.update(message_id, state="held", attempts=attempts, error=reason)
                return None
            logbook.update(message_id, state="deferred", attempts=attempts, error=reason,
                           next_attempt_at=self._next_attempt_at(attempts))
            return None
        if record.state == "processing" and record.attempts >= self.settings.max_crash_attempts:
            # It was being processed when the process died, this many times: a poison message
            # (e.g. one that crashes a native parser). Hold it instead of crash-looping.
            logbook.update(message_id, state="held",
                           error=f"processing was interrupted {record.attempts} times; held")
            log.error("poison message held", extra={"message_id": message_id})
            return None
        logbook.update(message_id, state="processing", attempts=record.attempts + 1)
        envelope = Envelope(client_ip=record.client_ip, helo=record.helo,
                            mail_from=record.mail_from, rcpt_to=record.rcpt_to)
        ctx = self.analyse(raw, envelope, message_id=message_id, tenant=record.tenant)
        state, next_attempt, error = self._final_state(ctx, record.attempts + 1)
        if error == RETRIES_EXHAUSTED:
            from mailmoat.bounce import Failure, notify_sender

            notify_sender(ctx, self.services, [
                Failure(rcpt, "4.4.7", f"retries exhausted; last: {ctx.deliveries[rcpt]}")
                for rcpt in ctx.envelope.rcpt_to
                if ctx.deliveries.get(rcpt, "").startswith("deferred")])
        logbook.update(
            message_id, state=state, disposition=str(ctx.disposition), message_id=ctx.message_id,
            subject=ctx.subject, timings={t.stage: round(t.duration_ms, 3) for t in ctx.trace},
            report=_stored_report(ctx), next_attempt_at=next_attempt, error=error)
        log.info("message processed", extra={"message_id": message_id, "tenant": ctx.tenant,
                                             "action": state})
        return ctx

    def _next_attempt_at(self, attempts: int) -> str:
        """Exponential backoff from the base, capped at an hour. Fixed-width microseconds: the
        worker compares these strings to decide what is due."""
        delay = self.settings.delivery_retry_base_seconds * (2 ** (attempts - 1))
        when = self.services.clock.now() + timedelta(seconds=min(delay, 3600.0))
        return when.isoformat(timespec="microseconds")

    def _final_state(self, ctx: MessageContext, attempts: int) -> tuple[str, str | None, str | None]:
        """message_state(), with the local retry policy for a deferred delivery."""
        state, reason = message_state(ctx)
        if state != "deferred":
            return state, None, reason
        if attempts >= self.settings.delivery_max_attempts:
            return "failed", None, RETRIES_EXHAUSTED
        return "deferred", self._next_attempt_at(attempts), "delivery deferred"

    # --- directory ------------------------------------------------------------------------
    def sync_config_to_directory(self) -> None:
        """Tenants in the TOML become directory rows (local runtime). Their `users` seed a new
        tenant only: afterwards the directory (CSV import, sync) is the source of truth."""
        directory = self.services.directory
        for tenant in self.services.config.tenants:
            created = directory.ensure_tenant(tenant.name, tenant.domains)
            if created and tenant.users:
                directory.upsert_recipients(
                    Recipient(address=u.address.lower(), tenant=tenant.name, name=u.name,
                              organisation=u.organisation, department=u.department,
                              title=u.title, memo=u.memo, spam_filter=u.spam_filter,
                              source="config")
                    for u in tenant.users)


def message_state(ctx: MessageContext) -> tuple[str, str | None]:
    """Where a processed message ends in the message log, and why (both runtimes): held,
    quarantined, dropped, or from the recipients' delivery outcomes — deferred when any waits,
    failed when all were refused, quarantined when every copy is in the spam quarantine."""
    if ctx.disposition == Disposition.HELD:
        return "held", "; ".join(f.detail for f in ctx.findings if f.symbol == "HELD") or None
    if ctx.disposition == Disposition.QUARANTINE:
        return "quarantined", None
    if ctx.disposition == Disposition.DROP:
        return "dropped", None
    outcomes = [ctx.deliveries.get(r, "") for r in ctx.envelope.rcpt_to]
    deferred = [o for o in outcomes if o.startswith("deferred")]
    if deferred:
        return "deferred", "; ".join(deferred)[:500]
    if outcomes and all(o.startswith("failed") for o in outcomes):
        return "failed", "; ".join(outcomes)[:500]
    if outcomes and all(o.startswith("quarantined") for o in outcomes):
        return "quarantined", None  # every copy held in the spam quarantine
    return "delivered", None


def _stored_report(ctx: MessageContext) -> dict[str, Any]:
    """The report for the message log: portal tokens live only in the recipients' copies."""
    from mailmoat.isolation import redact_portal_url

    report = ctx.to_report()
    report["portal_url"] = redact_portal_url(report["portal_url"])
    return report


def _mailer_factory(settings: Settings) -> object:
    from mailmoat.adapters.maildir import MaildirMailer
    from mailmoat.adapters.smtp import SmtpMailer

    maildir = MaildirMailer(settings.data_dir / "maildir")
    cache: dict[str, Mailer] = {}

    def mailer_for(tenant: TenantConfig) -> Mailer:
        delivery = tenant.delivery
        if delivery.mode == "maildir":
            return maildir
        if delivery.mode == "smtp":
            if not delivery.host:
                raise ValueError(f"tenant {tenant.name}: delivery.mode=smtp needs delivery.host")
            key = f"{tenant.name}:{delivery.host}:{delivery.port}"
            if key not in cache:
                password = os.environ.get(delivery.password_env) if delivery.password_env else None
                cache[key] = SmtpMailer(delivery.host, delivery.port,
                                        require_tls=delivery.require_tls,
                                        username=delivery.username, password=password,
                                        local_hostname=settings.smtp_hostname)
            return cache[key]
        raise ValueError(f"tenant {tenant.name}: delivery mode {delivery.mode!r} needs the AWS runtime")

    return mailer_for


def make_resolver(settings: Settings) -> Resolver:
    from mailmoat.adapters.dns import DnsPythonResolver, OverlayResolver, ZoneFileResolver

    if settings.dns_zone is not None:
        zone = ZoneFileResolver.from_file(settings.dns_zone)
        if settings.dns_zone_overlay:
            return OverlayResolver(zone, DnsPythonResolver(timeout=settings.dns_timeout))
        return zone
    return DnsPythonResolver(timeout=settings.dns_timeout)


def bootstrap(settings: Settings | None = None, *, config: GatewayConfig | None = None,
              data_dir: Path | None = None, mailer: Mailer | None = None) -> Runtime:
    """Build the runtime for this process. Local: files + SQLite under the data directory."""
    settings = settings or Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    if config is None:
        config = load_config(settings.config)
    if settings.runtime == "aws":
        from mailmoat.aws.entry import build_services

        # Tenants come from the directory table unless a config was given or loaded.
        return Runtime(settings=settings, services=build_services(
            settings, config=config if config.tenants else None, mailer=mailer))
    from mailmoat.adapters.clamd import ClamdAntivirus
    from mailmoat.adapters.clock import SystemClock
    from mailmoat.adapters.fs import FsBlobStore
    from mailmoat.adapters.sqlite import SqliteDatabase, SqliteDirectory, SqliteMessageLog
    from mailmoat.adapters.sqlite_admin import stored_policy
    from mailmoat.adapters.sqlite_isolation import SqliteIsolationStore
    from mailmoat.adapters.sqlite_keepmail import SqliteKeepMailStore
    from mailmoat.archive import BlobArchive, archive_root
    from mailmoat.bounce import OutboundSmtp

    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    db = SqliteDatabase(data / "mailmoat.sqlite3")
    mailer_for = (lambda _tenant: mailer) if mailer is not None else _mailer_factory(settings)
    services = Services(
        settings=settings,
        config=stored_policy(db, config),  # tenant policy saved in the admin console over the TOML
        blobs=FsBlobStore(data / "blobs"),
        directory=SqliteDirectory(db),
        log=SqliteMessageLog(db),
        mailer_for=mailer_for,  # type: ignore[arg-type]
        resolver=make_resolver(settings),
        clock=SystemClock(),
        antivirus=ClamdAntivirus.from_address(settings.clamd_socket),  # None → AV_DISABLED
        isolation=SqliteIsolationStore(db),
        archive=BlobArchive(FsBlobStore(archive_root(settings))),  # write-once originals
        keepmail=SqliteKeepMailStore(db),
    )
    services.notices = OutboundSmtp(services.resolver, port=settings.outbound_smtp_port,
                                    relay=settings.notice_relay, local_hostname=settings.smtp_hostname)
    if settings.geoip_db is not None:
        from mailmoat.adapters.geoip import GeoIp2Reader

        services.geoip = GeoIp2Reader(settings.geoip_db)
    runtime = Runtime(settings=settings, services=services)
    runtime.sync_config_to_directory()
    return runtime
