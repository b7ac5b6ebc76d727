"""What a Lambda event names (MessageRef) and the per-cold-start AWS runtime the handlers call."""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_plus

from mailmoat.aws import observability
from mailmoat.pipeline import STAGE_NAMES
from mailmoat.settings import Settings

if TYPE_CHECKING:
    from mailmoat.adapters.aws_dynamodb import DynamoMessageLog, DynamoStageLedger
    from mailmoat.adapters.aws_s3 import S3BlobStore
    from mailmoat.adapters.aws_ses_rules import SesReceiptRules
    from mailmoat.adapters.aws_signatures import S3SignatureMirror
    from mailmoat.adapters.aws_sqs import SqsStageQueue
    from mailmoat.aws.recipient_rules import RulePlan
    from mailmoat.aws.signatures import ClamdProcess, UpdateResult
    from mailmoat.config import GatewayConfig, TenantConfig
    from mailmoat.context import MessageContext
    from mailmoat.pipeline import Services
    from mailmoat.ports import Mailer
    from mailmoat.runtime import Runtime

log = logging.getLogger("mailmoat.aws")

# SES's S3 action writes `raw/<SES message id>`; the bucket notification filters on it too.
RAW_PREFIX = "raw/"
_MAX_ID_CHARS = 256


def _message_id(value: object) -> str:
    """A message id becomes part of S3 keys and DynamoDB keys, so it must not carry a path."""
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_CHARS:
        raise ValueError(f"not a message id: {value!r:.80}")
    if "/" in value or "\\" in value or value in {".", ".."} or not value.isprintable():
        raise ValueError(f"not a message id: {value!r:.80}")
    return value


def _id_from_key(key: str) -> str:
    if not key.startswith(RAW_PREFIX):
        raise ValueError(f"object key outside {RAW_PREFIX}: {key!r:.120}")
    return _message_id(key.removeprefix(RAW_PREFIX))


def _json_object(text: object, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class MessageRef:
    """One stored message a record points at. `bucket` None means this deployment's raw bucket."""

    message_id: str
    key: str
    bucket: str | None = None
    stage: str | None = None  # set by our own stage messages: the stage they are queued for
    recipients: tuple[str, ...] = ()  # envelope recipients, when the event carries them (SES)

    @classmethod
    def for_id(cls, message_id: str, *, stage: str | None = None) -> MessageRef:
        message_id = _message_id(message_id)
        return cls(message_id=message_id, key=RAW_PREFIX + message_id, stage=stage)

    @classmethod
    def from_s3_record(cls, record: Mapping[str, Any]) -> MessageRef:
        """An S3 event notification record (ObjectCreated only; the bucket sends nothing else)."""
        event_name = str(record.get("eventName", ""))
        if not event_name.startswith("ObjectCreated:"):
            raise ValueError(f"unexpected S3 event {event_name!r}")
        s3 = record["s3"]
        # S3 form-encodes keys in notifications ("+" is a space, "%2B" a plus). This is the one
        # place that decodes them: everything downstream sees the real key.
        key = unquote_plus(s3["object"]["key"])
        return cls(message_id=_id_from_key(key), key=key, bucket=s3["bucket"]["name"])

    @classmethod
    def from_ses_record(cls, record: Mapping[str, Any]) -> MessageRef:
        """An SES receipt event (Lambda action, or the SNS notification of an S3 action)."""
        ses = record.get("ses", record)
        mail, receipt = ses["mail"], ses.get("receipt", {})
        action = receipt.get("action", {})
        recipients = tuple(str(r) for r in receipt.get("recipients") or mail.get("destination", []))
        if action.get("type") == "S3" and action.get("objectKey"):
            key = str(action["objectKey"])
            return cls(message_id=_id_from_key(key), key=key, bucket=action.get("bucketName"),
                       recipients=recipients)
        # A Lambda action runs after our S3 action in the same rule, so the object is raw/<id>.
        message_id = _message_id(mail["messageId"])
        return cls(message_id=message_id, key=RAW_PREFIX + message_id, recipients=recipients)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> list[MessageRef]:
        """A queue message's JSON body: S3 notification, S3 test event, SNS envelope, or ours."""
        if body.get("Event") == "s3:TestEvent":
            return []  # S3 sends it once when the notification is configured; it names no object
        if body.get("Type") == "Notification" and "Message" in body:
            return cls.from_body(_json_object(body["Message"], "SNS message"))
        if "Records" in body:
            return [cls._from_record(r) for r in body["Records"]]
        if body.get("notificationType") == "Received":
            return [cls.from_ses_record(body)]
        if "id" in body and "stage" in body:
            stage = body["stage"]
            if stage not in STAGE_NAMES:
                raise ValueError(f"unknown stage {stage!r:.40}")
            return [cls.for_id(body["id"], stage=stage)]
        raise ValueError(f"unrecognised message body with keys {sorted(body)[:8]}")

    @classmethod
    def from_sqs(cls, record: Mapping[str, Any]) -> list[MessageRef]:
        """Every message one SQS record names: none for s3:TestEvent, else one per S3/SES record.
        Accepts a plain dict or powertools' SQSRecord. Anything unrecognised raises ValueError, so
        the record is retried and ends in the DLQ (alarmed) instead of being dropped silently."""
        return cls.from_body(_json_object(record["body"], "SQS body"))

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> list[MessageRef]:
        """A whole Lambda event (for `sam local invoke` and tools): SQS, S3 or SES records."""
        records = event.get("Records")
        if not isinstance(records, list):
            raise ValueError("not a records event (SQS, S3 or SES)")
        return [ref for record in records for ref in cls._from_any(record)]

    @classmethod
    def _from_any(cls, record: Mapping[str, Any]) -> list[MessageRef]:
        if record.get("eventSource") == "aws:sqs":
            return cls.from_sqs(record)
        return [cls._from_record(record)]

    @classmethod
    def _from_record(cls, record: Mapping[str, Any]) -> MessageRef:
        source = record.get("eventSource") or record.get("EventSource")
        if source == "aws:s3":
            return cls.from_s3_record(record)
        if source == "aws:ses":
            return cls.from_ses_record(record)
        raise ValueError(f"unsupported record source {source!r:.40}")


class AwsSettings(Settings):
    """Names of this deployment's resources, set by template.yaml as MAILMOAT_* variables."""

    raw_bucket: str = ""
    quarantine_bucket: str = ""
    signature_bucket: str = ""
    message_log_table: str = ""
    directory_table: str = ""
    isolated_files_table: str = ""
    idempotency_table: str = ""
    next_queue_url: str = ""  # the queue of the stage after this function's stage
    stage_queue_urls: str = ""  # "stage=url,…" for the reconciler, which re-queues any stage
    delivery_mode: str = "ses"
    retention_days: int = 30  # raw mail, quarantine, log rows and portal links
    relay_identity: str = ""
    arc_key_secret_arn: str = ""
    receipt_rule_set: str = ""
    receipt_rule: str = ""  # the stack's rule: actions and settings the per-tenant rules copy
    receipt_domains: str = ""  # the Domains parameter, comma-separated: what the stack's rule accepts
    # The admin console's sign-in (portal): the user pool, its app client and the managed-login
    # domain ("<prefix>.auth.<region>.amazoncognito.com"); web/mailmoat_web/admin/oidc.py.
    cognito_user_pool_id: str = ""
    cognito_client_id: str = ""
    cognito_domain: str = ""
    admin_session_secret_arn: str = ""  # signs console cookies alike in every portal instance
    # Per-recipient spam quarantine (authenticate, deliver, portal, digest) and the key of the
    # digest's signed links (portal, digest).
    spam_table: str = ""
    spam_link_secret_arn: str = ""
    keepmail_table: str = ""  # kept copies' index rows and the keep-mail sign-in (deliver, portal)
    directory_secret_prefix: str = ""  # Secrets Manager names of the directory providers' secrets
    # ClamAV on Lambda: freshclam in the signature-update function, clamd in the scan function.
    freshclam_path: str = "freshclam"
    clamav_mirror: str = "database.clamav.net"
    clamd_path: str = "clamd"
    clamd_config: str = ""  # set by the scan image (functions/scan/Dockerfile): start clamd lazily
    signature_dir: Path = Path("/tmp/clamav")  # noqa: S108 - the DatabaseDirectory of that clamd.conf
    clamd_start_seconds: float = 120.0
    # The stage queues' maxReceiveCount: the attempt that reaches it records `held`.
    stage_max_attempts: int = 5
    reconcile_after_minutes: int = 15  # a stored message this long without progress is re-queued
    config_refresh_seconds: int = 300  # tenant settings re-read from the directory table

    @property
    def postmaster(self) -> str:
        """Mail the gateway writes itself (DSNs, digests) must come from a verified SES identity:
        postmaster@ the relay identity's domain, or the relay address itself when the identity
        is an address, unless MAILMOAT_POSTMASTER_ADDRESS names one."""
        if self.postmaster_address:
            return self.postmaster_address
        if "@" in self.relay_identity:
            return self.relay_identity
        if self.relay_identity:
            return f"postmaster@{self.relay_identity}"
        return super().postmaster

    def queue_urls(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.stage_queue_urls.split(",") if "=" in item)
        return {stage.strip(): url.strip() for stage, _, url in pairs}


class StageFailed(RuntimeError):
    """A stage raised (or delivery was deferred): the record is failed so SQS retries it; after
    the last attempt it lands in the DLQ and the log already says `held`."""


# SES's own Received header names the envelope recipient: "... with SMTP id X for a@b.example;"
_SES_FOR = re.compile(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+?)>?\s*;", re.IGNORECASE)
_FINAL = frozenset({"delivered", "quarantined", "dropped", "held", "failed"})


def _ses_recipient(raw: bytes) -> str | None:
    from email import policy
    from email.parser import BytesHeaderParser

    received = BytesHeaderParser(policy=policy.compat32).parsebytes(raw).get_all("Received") or []
    match = _SES_FOR.search(" ".join(str(received[0]).split())) if received else None
    return match.group(1).lower() if match else None


def _next_stage(stage: str | None) -> str | None:
    if stage is None:
        return STAGE_NAMES[0]
    index = STAGE_NAMES.index(stage) + 1
    return STAGE_NAMES[index] if index < len(STAGE_NAMES) else None


def _prefix(message_id: str, stage: str) -> str:
    # rewrite's result is what deliver reads: out/ is all the deliver role may read besides raw/.
    return f"{'out' if stage == 'rewrite' else 'work'}/{message_id}/{stage}"


def _rcpt_key(recipient: str) -> str:
    return quote(recipient.lower(), safe="@.+-_")


@dataclass(slots=True)
class AwsRuntime:
    """What the Lambda handlers call. Cheap to build: adapters are made on first real use, so a
    handler module imports fast and a test can load it without AWS."""

    settings: AwsSettings
    _runtime: Runtime | None = field(default=None, repr=False)
    _ledger: DynamoStageLedger | None = field(default=None, repr=False)
    _queue: SqsStageQueue | None = field(default=None, repr=False)
    _clamd: ClamdProcess | None = field(default=None, repr=False)
    _config_at: float = 0.0

    # --- wiring ---------------------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            from mailmoat.runtime import bootstrap

            settings = self.settings
            if settings.runtime != "aws":  # a handler always runs on the AWS adapters
                settings = settings.model_copy(update={"runtime": "aws"})
            self._runtime = bootstrap(settings)
            self._config_at = time.monotonic()
        elif time.monotonic() - self._config_at > self.settings.config_refresh_seconds:
            self._runtime.services.config = tenant_config(self.settings, self._runtime.services.directory)
            self._config_at = time.monotonic()
        return self._runtime

    @property
    def services(self) -> Services:
        return self.runtime.services

    @property
    def log(self) -> DynamoMessageLog:
        from mailmoat.adapters.aws_dynamodb import DynamoMessageLog

        logbook = self.services.log
        if not isinstance(logbook, DynamoMessageLog):
            raise TypeError("the AWS runtime needs the DynamoDB message log")
        return logbook

    @property
    def blobs(self) -> S3BlobStore:
        from mailmoat.adapters.aws_s3 import S3BlobStore

        blobs = self.services.blobs
        if not isinstance(blobs, S3BlobStore):
            raise TypeError("the AWS runtime needs the S3 blob store")
        return blobs

    @property
    def ledger(self) -> DynamoStageLedger:
        if self._ledger is None:
            from mailmoat.adapters.aws_dynamodb import DynamoStageLedger

            self._ledger = DynamoStageLedger(self.settings.idempotency_table)
        return self._ledger

    @property
    def queue(self) -> SqsStageQueue:
        if self._queue is None:
            from mailmoat.adapters.aws_sqs import SqsStageQueue

            self._queue = SqsStageQueue()
        return self._queue

    def queue_url(self, stage: str) -> str:
        return self.settings.queue_urls().get(stage) or self.settings.next_queue_url

    # --- stages ---------------------------------------------------------------------------
    def run_stage(self, stage: str, refs: Iterable[MessageRef]) -> None:
        if stage not in STAGE_NAMES:
            raise ValueError(f"unknown stage {stage!r}")
        for ref in refs:
            if ref.stage is not None and ref.stage != stage:
                # A message on the wrong queue would skip a stage: refuse rather than guess.
                raise ValueError(f"message {ref.message_id} queued for {ref.stage}, not {stage}")
            self._process(stage, ref)

    def _process(self, stage: str, ref: MessageRef) -> None:
        from mailmoat.pipeline import run_pipeline

        if ref.bucket is not None and ref.bucket != self.settings.raw_bucket:
            raise ValueError(f"object in an unexpected bucket {ref.bucket!r:.80}")
        message_id = ref.message_id
        extra = {"message_id": message_id, "stage": stage}
        if self.ledger.is_complete(message_id, stage):
            log.info("stage already done; duplicate event ignored", extra=extra)
            return
        try:
            raw = self.blobs.get(ref.key)
        except FileNotFoundError:
            if stage == STAGE_NAMES[0]:
                raise  # S3 notifications can arrive before the object reads back: retry
            self.log.update(message_id, state="held", error="raw message missing from the store")
            return
        if stage == STAGE_NAMES[0]:
            accepted = self._accept(ref, raw)
            if accepted is None:
                return
            ctx = accepted
            attempt = self.log.begin_attempt(message_id, stage)
        else:
            attempt = self.log.begin_attempt(message_id, stage)
            try:
                ctx = self._load(message_id, raw, STAGE_NAMES[STAGE_NAMES.index(stage) - 1])
            except Exception as exc:
                # No context to record: the row still says held once the retries are used up.
                if attempt >= self.settings.stage_max_attempts:
                    self.log.update(message_id, state="held",
                                    error=f"{stage}: state of the previous stage unreadable: {exc}"[:500])
                raise
        if stage == "rewrite":
            self._forward_before_seal(ctx)
        if stage == "scan":
            self._ensure_clamd()
        run_pipeline(ctx, self.services, [stage])
        # Each stage's function parses the message again and so re-adds the parse findings.
        ctx.findings = list(dict.fromkeys(ctx.findings))
        error = next((t.detail for t in ctx.trace if t.stage == stage and t.outcome == "error"), None)
        if error is not None:
            self._failed(ctx, stage, attempt, f"stage {stage} failed: {error}")
        self._save(ctx, stage)
        following = _next_stage(stage)
        if following is None or ctx.disposition.value in ("held", "drop"):
            from mailmoat.runtime import message_state

            state, error = message_state(ctx)
            if state == "deferred":
                self._failed(ctx, stage, attempt, error or "delivery deferred")
            self._finish(ctx, state, error)
        else:
            self.log.update(message_id, state="processing", stage=stage,
                            timings=_timings(ctx), error=None)
            self.queue.send(self.queue_url(following), message_id, following)
        self.ledger.complete(message_id, stage)
        observability.count(observability.STAGE_MESSAGES, stage=stage)
        log.info("stage done", extra={**extra, "tenant": ctx.tenant, "action": str(ctx.disposition)})

    def _forward_before_seal(self, ctx: MessageContext) -> None:
        """SES delivery rewrites From (DESIGN §1). Doing it after the ARC seal would break the
        seal's message signature (it covers From), so the copies the rewrite stage seals are
        already the forwarded ones; SesMailer then sends them unchanged."""
        from mailmoat.aws.forwarder import forwarded, relay_address

        if ctx.disposition.value != "deliver":
            return
        tenant = self.services.tenant(ctx)
        if delivery_mode(self.settings, tenant) != "ses":
            return
        relay = relay_address(tenant.delivery.relay_address or self.settings.relay_identity)
        before = ctx.output
        ctx.output = forwarded(before if before is not None else ctx.raw, relay)
        ctx.outputs = {rcpt: ctx.output if data is before else forwarded(data, relay)
                       for rcpt, data in ctx.outputs.items()}

    def _failed(self, ctx: MessageContext, stage: str, attempt: int, error: str) -> None:
        """Raise for SQS to retry; the attempt that reaches maxReceiveCount records `held`
        first, so the message in the DLQ is also visible as held in the log."""
        observability.count(observability.STAGE_FAILURES, stage=stage)
        if attempt >= self.settings.stage_max_attempts:
            observability.count(observability.DEAD_LETTERED, stage=stage)
            self._finish(ctx, "held", f"{error} (attempt {attempt}; record in the DLQ)")
        else:
            self.log.update(ctx.id, state="processing", error=f"{error} (attempt {attempt})"[:500])
        raise StageFailed(error)

    def _finish(self, ctx: MessageContext, state: str, error: str | None) -> None:
        from mailmoat.isolation import redact_portal_url

        report = ctx.to_report()
        report["portal_url"] = redact_portal_url(report["portal_url"])
        if state != "deferred":  # a deferred delivery is retried: counted when it ends
            observability.count(observability.DISPOSITIONS,
                                disposition="held" if state == "held" else str(ctx.disposition))
        for outcome in ctx.deliveries.values():
            observability.count(observability.DELIVERIES, outcome=outcome.split(":")[0])
        self.log.update(ctx.id, state=state, disposition=str(ctx.disposition), message_id=ctx.message_id,
                        subject=ctx.subject, timings=_timings(ctx), report=report, error=error)

    # --- the message between stages ------------------------------------------------------
    def _accept(self, ref: MessageRef, raw: bytes) -> MessageContext | None:
        from mailmoat.auth.received import envelope_from_message
        from mailmoat.context import Envelope, MessageContext
        from mailmoat.ports import MessageRecord

        envelope = envelope_from_message(raw, Envelope(rcpt_to=[r.lower() for r in ref.recipients]))
        if not envelope.rcpt_to:
            envelope.rcpt_to = self._recipients_from_headers(raw)
        tenant = self.runtime.tenant_for(envelope)
        self.log.accept(MessageRecord(
            id=ref.message_id, received_at=datetime.now(UTC), state="accepted",
            mail_from=envelope.mail_from, rcpt_to=list(envelope.rcpt_to), client_ip=envelope.client_ip,
            helo=envelope.helo, tenant=tenant, size=len(raw)))
        if not envelope.rcpt_to:
            # Never silent: recorded as dropped (SES named a recipient we do not know) or held
            # (no recipient found at all), visible to the admin, re-drivable.
            named = _ses_recipient(raw)
            self.log.update(ref.message_id, state="dropped" if named else "held",
                            error=f"unknown recipient {named}"[:300] if named else
                            "no registered recipient found in the stored message")
            self.ledger.complete(ref.message_id, STAGE_NAMES[0])
            return None
        return MessageContext(id=ref.message_id, raw=raw, envelope=envelope, tenant=tenant)

    def _recipients_from_headers(self, raw: bytes) -> list[str]:
        """SES's S3 action stores no envelope; its Received header names the recipient when
        there is one. Otherwise the registered addresses among To / Cc (a Bcc recipient of a
        multi-recipient message is only found through an SES event carrying the envelope)."""
        from email import policy
        from email.parser import BytesHeaderParser
        from email.utils import getaddresses

        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        directory = self.services.directory
        received = msg.get_all("Received") or []
        if received:
            match = _SES_FOR.search(" ".join(str(received[0]).split()))
            if match:
                # The envelope recipient, named by SES: that one only. An address we do not
                # know got past the recipient conditions and is dropped (DESIGN §1), never
                # redirected to a registered address that merely appears in To.
                known = directory.recipient(match.group(1)) is not None
                return [match.group(1).lower()] if known else []
        values = [str(v) for name in ("To", "Cc") for v in (msg.get_all(name) or [])]
        found = [a.lower() for _, a in getaddresses(values) if a and directory.recipient(a) is not None]
        return list(dict.fromkeys(found))

    def _save(self, ctx: MessageContext, stage: str) -> None:
        from mailmoat.aws.state import dump

        prefix = _prefix(ctx.id, stage)
        state = dump(ctx)
        if ctx.output is not None:
            self.blobs.put(f"{prefix}/output.eml", ctx.output)
        for rcpt, data in ctx.outputs.items():
            self.blobs.put(f"{prefix}/rcpt/{_rcpt_key(rcpt)}.eml", data)
        state["stored"] = {"output": ctx.output is not None, "outputs": sorted(ctx.outputs)}
        self.blobs.put(f"{prefix}/state.json", json.dumps(state, ensure_ascii=False).encode("utf-8"))

    def _load(self, message_id: str, raw: bytes, previous: str) -> MessageContext:
        from mailmoat.aws.state import load

        prefix = _prefix(message_id, previous)
        data = json.loads(self.blobs.get(f"{prefix}/state.json"))
        ctx = load(data, raw)
        stored = data.get("stored", {})
        if stored.get("output"):
            ctx.output = self.blobs.get(f"{prefix}/output.eml")
        for rcpt in stored.get("outputs", []):
            ctx.outputs[rcpt] = self.blobs.get(f"{prefix}/rcpt/{_rcpt_key(rcpt)}.eml")
        return ctx

    # --- schedules ------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Re-queue every raw/ message older than reconcile_after_minutes whose log row is not
        in a final state and has not moved for as long; returns the count."""
        cutoff = datetime.now(UTC) - timedelta(minutes=self.settings.reconcile_after_minutes)
        urls = self.settings.queue_urls()
        count = 0
        for key, modified in self.blobs.objects(RAW_PREFIX):
            if modified > cutoff:
                continue
            try:
                message_id = _id_from_key(key)
            except ValueError:
                continue
            record = self.log.get(message_id)
            if record is not None and (record.state in _FINAL or
                                       (record.updated_at is not None and record.updated_at > cutoff)):
                continue
            stage = _next_stage(self.log.last_stage(message_id)) if record is not None else STAGE_NAMES[0]
            if stage is None:
                continue
            self.queue.send(urls.get(stage, ""), message_id, stage)
            count += 1
            log.info("re-queued", extra={"message_id": message_id, "stage": stage})
        return count

    def sync_directory(self) -> dict[str, str]:
        """Pull each tenant's users from its directory provider (Microsoft Graph / Google
        Directory) into the directory table; the stream then republishes the SES recipients.
        One tenant's failure does not stop the others; any failure or refusal (the deletion
        guard) fails the run at the end, so the Errors alarm tells the admin."""
        from mailmoat.adapters.aws_dynamodb import DynamoDirectory
        from mailmoat.adapters.aws_secrets import SecretReader
        from mailmoat.directory.sync import sync_tenant  # loaded by this function only
        directory = DynamoDirectory(self.settings.directory_table)
        secrets = SecretReader(self.settings.directory_secret_prefix)
        outcomes: dict[str, str] = {}
        for tenant in directory.tenant_configs():
            if tenant.directory.provider is None:
                continue
            try:
                result = sync_tenant(directory, tenant, read_secret=secrets.get)
            except Exception as exc:  # a provider or a config error: reported below, others go on
                log.error("directory sync failed", extra={"tenant": tenant.name, "error": str(exc)[:300]})
                outcomes[tenant.name] = "failed"
                continue
            outcomes[tenant.name] = "refused" if result.refused else "applied"
            if result.refused:
                log.error("directory sync refused", extra={"tenant": tenant.name, "error": result.refused})
        problems = sorted(t for t, outcome in outcomes.items() if outcome != "applied")
        if problems:
            raise RuntimeError(f"directory sync did not apply for: {', '.join(problems)}")
        return outcomes

    def send_spam_digests(self, now: datetime | None = None) -> Any:
        """The daily digest of quarantined spam to each recipient who asked for one."""
        import dataclasses

        from mailmoat.spam.digest import send_digests  # loaded by this function only
        services = self.services
        if getattr(services.mailer_for, "claims_deliveries", False):
            # ClaimedMailer refuses any send without a claim, and a digest has none.
            services = dataclasses.replace(
                services, mailer_for=_mailer_factory(self.settings, self.log, claimed=False))
        return send_digests(services, now=now or datetime.now(UTC))

    # --- directory → SES recipient conditions ----------------------------------------------
    def receipt_rules(self) -> SesReceiptRules:
        from mailmoat.adapters.aws_ses_rules import SesReceiptRules

        return SesReceiptRules(self.settings.receipt_rule_set)

    def publish_directory(self, event: Mapping[str, Any] | None = None) -> RulePlan:
        """Make the SES receipt rules' recipient conditions equal the registered addresses.

        Called once per stream batch (or by the hourly schedule, which also repairs a rule a
        stack update reset): the records only say that something changed, the whole set is
        recomputed from the table, so the result does not depend on their order, on
        duplicates or on records lost to the stream's 24 h retention."""
        from mailmoat.adapters.aws_dynamodb import DynamoDirectory
        from mailmoat.aws.recipient_rules import TenantAddresses, normalise, plan_recipient_rules

        directory = DynamoDirectory(self.settings.directory_table)
        tenants = []
        for config in directory.tenant_configs():
            addresses: list[str] = []
            for recipient in directory.recipients(config.name):
                addresses.append(recipient.address)
                addresses.extend(getattr(recipient, "aliases", None) or [])
            tenants.append(TenantAddresses(config.name, tuple(config.domains), normalise(addresses)))
        rules = self.receipt_rules()
        base_domains = [d.strip() for d in self.settings.receipt_domains.split(",") if d.strip()]
        plan = plan_recipient_rules(rules.rules(), base=self.settings.receipt_rule,
                                    base_domains=base_domains, tenants=tenants)
        rules.apply(plan)
        records = len(event.get("Records", [])) if event else 0
        observability.count(observability.RECIPIENT_RULE_CHANGES, plan.changes)
        # Every run reports the count, 0 included, so the alarm clears once the cause is gone.
        observability.count(observability.RECIPIENT_CONDITIONS_OVER_CEILING, len(plan.by_domain))
        if plan.by_domain:
            log.error("over the SES recipient ceiling: accepted by domain, unknown recipients are "
                      "dropped after acceptance instead of refused (docs/deploy.md: Mail Manager)",
                      extra={"tenants": plan.by_domain, "rules": plan.rules_used})
        log.info("recipient conditions published",
                 extra={"records": records, "addresses": plan.addresses, "rules": plan.rules_used,
                        "created": len(plan.create), "updated": len(plan.update),
                        "deleted": len(plan.delete)})
        return plan

    # --- ClamAV databases -----------------------------------------------------------------
    def signature_mirror(self) -> S3SignatureMirror:
        from mailmoat.adapters.aws_signatures import S3SignatureMirror

        return S3SignatureMirror(self.settings.signature_bucket)

    def update_signatures(self) -> UpdateResult:
        """freshclam into a temp dir, then the databases that changed to the signature bucket."""
        import tempfile

        from mailmoat.aws.signatures import update_signatures

        with tempfile.TemporaryDirectory(prefix="freshclam-") as workdir:
            result = update_signatures(self.signature_mirror(), freshclam=self.settings.freshclam_path,
                                       mirror=self.settings.clamav_mirror, workdir=Path(workdir))
        observability.count(observability.SIGNATURE_FILES_UPLOADED, len(result.uploaded))
        log.info("signatures published", extra={"uploaded": result.uploaded, "versions": result.versions})
        return result

    def _ensure_clamd(self) -> None:
        """The scan image's clamd, started at the first scan of an execution environment with the
        databases from the signature bucket. If that fails the scan still runs: the antivirus
        check then reports SCAN_FAILED and the policy isolates (fails closed); the next
        message tries again."""
        if not self.settings.clamd_config:
            return  # no image-managed clamd (local runs, tests): MAILMOAT_CLAMD_SOCKET as given
        from mailmoat.adapters.clamd import ClamdAntivirus
        from mailmoat.aws.signatures import ClamdProcess, fetch_signatures

        if self._clamd is None:
            address = self.settings.clamd_socket or "/tmp/clamd.sock"  # noqa: S108
            self._clamd = ClamdProcess(
                command=[self.settings.clamd_path, f"--config-file={self.settings.clamd_config}"],
                ready=ClamdAntivirus(address, connect_timeout=1.0).ping,
                start_seconds=self.settings.clamd_start_seconds)
        if self._clamd.process is not None and self._clamd.process.poll() is None and self._clamd.ready():
            return
        try:
            fetched = fetch_signatures(self.signature_mirror(), self.settings.signature_dir)
        except Exception as exc:  # S3 or a file: either way the scan must go on and fail closed
            log.error("ClamAV databases unavailable: %s", exc)
            return
        observability.count(observability.SIGNATURE_FILES_DOWNLOADED, len(fetched))
        if not self._clamd.ensure():
            log.error("clamd is not running: attachments get SCAN_FAILED until it starts")


def _timings(ctx: MessageContext) -> dict[str, float]:
    return {t.stage: round(t.duration_ms, 3) for t in ctx.trace}


# --- composition (runtime.bootstrap calls this for MAILMOAT_RUNTIME=aws) -----------------------

def tenant_config(settings: Settings, directory: object) -> GatewayConfig:
    """Tenants from the directory table (DESIGN §9: same fields as the local TOML)."""
    from mailmoat.adapters.aws_dynamodb import DynamoDirectory
    from mailmoat.config import GatewayConfig

    if isinstance(directory, DynamoDirectory):
        return GatewayConfig(tenant=directory.tenant_configs())  # type: ignore[call-arg]
    return GatewayConfig()


def build_services(settings: Settings, *, config: GatewayConfig | None = None,
                   mailer: Mailer | None = None) -> Services:
    """The AWS adapters for runtime.bootstrap: S3, DynamoDB, SES / SMTP, Secrets Manager."""
    from mailmoat.adapters.aws_dynamodb import DynamoDirectory, DynamoIsolationStore, DynamoMessageLog
    from mailmoat.adapters.aws_s3 import S3BlobStore
    from mailmoat.adapters.clamd import ClamdAntivirus
    from mailmoat.adapters.clock import SystemClock
    from mailmoat.pipeline import Services
    from mailmoat.runtime import make_resolver

    aws = settings if isinstance(settings, AwsSettings) else AwsSettings(**settings.model_dump())
    updates: dict[str, Any] = {}
    if not aws.data_dir.is_absolute():
        updates["data_dir"] = Path("/tmp/mailmoat")  # noqa: S108 - the only writable place on Lambda
    if aws.arc_domain is None and aws.relay_identity:
        # The seal's d=: the relay domain, whose DNS the operator controls anyway (deploy.md).
        updates["arc_domain"] = aws.relay_identity.rpartition("@")[2]
    if aws.arc_key_secret_arn and aws.arc_key_file is None:
        from mailmoat.adapters.aws_secrets import arc_key_file

        updates["arc_key_file"] = arc_key_file(aws.arc_key_secret_arn)  # once per cold start
    if updates:
        aws = aws.model_copy(update=updates)
    directory = DynamoDirectory(aws.directory_table)
    logbook = DynamoMessageLog(aws.message_log_table, retention_days=aws.retention_days)
    routes = {"isolated/": aws.quarantine_bucket} if aws.quarantine_bucket else {}
    services = Services(
        settings=aws,
        config=config if config is not None else tenant_config(aws, directory),
        blobs=S3BlobStore(aws.raw_bucket, routes=routes),
        directory=directory,
        log=logbook,
        mailer_for=(lambda _t: mailer) if mailer is not None else _mailer_factory(aws, logbook),
        resolver=make_resolver(aws),
        clock=SystemClock(),
        antivirus=ClamdAntivirus.from_address(aws.clamd_socket),
        isolation=DynamoIsolationStore(aws.isolated_files_table) if aws.isolated_files_table else None,
    )
    if aws.keepmail_table:
        from mailmoat.adapters.aws_dynamodb_keepmail import DynamoKeepMailStore

        services.keepmail = DynamoKeepMailStore(aws.keepmail_table)
    if aws.relay_identity:
        from mailmoat.adapters.aws_ses import SesNoticeSender

        # DSNs leave through SES as our own message (Lambda cannot reach port 25).
        services.notices = SesNoticeSender(aws.postmaster)
    if aws.geoip_db is not None:
        from mailmoat.adapters.geoip import GeoIp2Reader

        services.geoip = GeoIp2Reader(aws.geoip_db)
    return services


def delivery_mode(settings: AwsSettings, tenant: TenantConfig) -> str:
    """The tenant's mode; "maildir" (the TOML default) means unset on AWS: the stack's default."""
    mode = tenant.delivery.mode
    return mode if mode != "maildir" else settings.delivery_mode


def _mailer_factory(settings: AwsSettings, logbook: DynamoMessageLog, *, claimed: bool = True) -> Any:
    """Per tenant, the mailer of its delivery mode. `claimed`: wrapped so that it sends only under
    a delivery claim this process won (every per-message delivery); the digest, which is not a
    message of the log and takes no claim, gets the bare mailer."""
    from mailmoat.aws.delivery import ClaimedMailer

    cache: dict[str, Mailer] = {}

    def mailer_for(tenant: TenantConfig) -> Mailer:
        delivery = tenant.delivery
        mode = delivery_mode(settings, tenant)
        key = f"{tenant.name}:{mode}"
        if key in cache:
            return cache[key]
        inner: Mailer
        if mode == "ses":
            from mailmoat.adapters.aws_ses import SesMailer

            inner = SesMailer(delivery.relay_address or settings.relay_identity,
                              routing_domain=delivery.routing_domain)
        elif mode == "smtp":
            import os

            from mailmoat.adapters.smtp import SmtpMailer

            if not delivery.host:
                raise ValueError(f"tenant {tenant.name}: delivery.mode=smtp needs delivery.host")
            password = os.environ.get(delivery.password_env) if delivery.password_env else None
            inner = SmtpMailer(delivery.host, delivery.port, require_tls=True,
                               username=delivery.username, password=password,
                               local_hostname=settings.smtp_hostname)
        else:
            raise ValueError(f"tenant {tenant.name}: delivery mode {mode!r} is not available on AWS")
        cache[key] = ClaimedMailer(inner, logbook) if claimed else inner
        return cache[key]

    mailer_for.claims_deliveries = claimed  # type: ignore[attr-defined]
    return mailer_for


@functools.cache
def aws_runtime() -> AwsRuntime:
    """Once per cold start (handlers call it at module level)."""
    return AwsRuntime(AwsSettings())


def run_stage(stage: str, refs: Iterable[MessageRef]) -> None:
    aws_runtime().run_stage(stage, refs)
