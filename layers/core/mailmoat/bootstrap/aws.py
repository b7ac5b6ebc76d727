"""The AWS composition root (every Lambda handler): S3, DynamoDB, SQS, SES, Secrets Manager,
the scan image's clamd. The only code besides bootstrap/local.py that builds adapters.

Importing it is cheap: settings (pydantic), boto3 and the pipeline load when the first
invocation builds what it needs, so a handler module imports fast and a test can load it
without AWS."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runtime's modules load when it is built (first invocation), not at import
    from mailmoat.adapters.aws_dynamodb import DynamoDirectory
    from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
    from mailmoat.aws.events import MessageRef
    from mailmoat.aws.signatures import UpdateResult
    from mailmoat.config import GatewayConfig, TenantConfig
    from mailmoat.pipeline import AdminStores
    from mailmoat.ports import (
        Antivirus,
        ArchiveStore,
        AttemptStore,
        BlobStore,
        IsolationStore,
        KeepMailStore,
        Mailer,
        PdfConverter,
        SpamStore,
    )
    from mailmoat.runtime import Runtime
    from mailmoat.services.rescan import AntivirusLater, RequestedScans
    from mailmoat.settings import AwsSettings, Settings

# SQS holds a message back at most 15 minutes (DelaySeconds ≤ 900): the AWS retry backoff cap.
SQS_MAX_DELAY_SECONDS = 900.0
# SandboxPollFunction's schedule interval and timeout (template.yaml, docs/aws-limits.md): its
# time budget when the handler gives none.
SANDBOX_POLL_SECONDS = 300.0


def aws_settings(settings: Settings | None = None) -> AwsSettings:
    from mailmoat.settings import AwsSettings

    aws = settings if isinstance(settings, AwsSettings) else AwsSettings(
        **(settings.model_dump() if settings is not None else {}))
    updates: dict[str, Any] = {"runtime": "aws"}
    if not aws.data_dir.is_absolute():
        updates["data_dir"] = Path("/tmp/mailmoat")  # noqa: S108 - the only writable place on Lambda
    if aws.arc_domain is None and aws.relay_identity:
        # The seal's d=: the relay domain, whose DNS the operator controls anyway (deploy.md).
        updates["arc_domain"] = aws.relay_identity.rpartition("@")[2]
    if aws.arc_key_secret_arn and aws.arc_key_file is None:
        from mailmoat.adapters.aws_secrets import arc_key_file

        updates["arc_key_file"] = arc_key_file(aws.arc_key_secret_arn)  # once per cold start
    if aws.spam_link_secret_arn and aws.spam_link_secret_file is None:
        from mailmoat.adapters.aws_secrets import key_file

        updates["spam_link_secret_file"] = key_file(aws.spam_link_secret_arn)
    return aws.model_copy(update=updates)


def delivery_mode(settings: AwsSettings, tenant: TenantConfig) -> str:
    """The tenant's mode; "maildir" (the TOML default) means unset on AWS: the stack's default."""
    mode = tenant.delivery.mode
    return mode if mode != "maildir" else settings.delivery_mode


def tenant_config(directory: DynamoDirectory) -> GatewayConfig:
    """Tenants from the directory table (DESIGN §9: same fields as the local TOML)."""
    from mailmoat.config import GatewayConfig

    return GatewayConfig(tenant=directory.tenant_configs())  # type: ignore[call-arg]


# What each function needs in production mode (mailmoat.production): the scan function scans
# with clamd and libmagic, the rewrite function seals, the portal re-scans what it unlocks with
# libmagic. The portal has no clamd: what a password opens is held (AV_PENDING) until the
# AvScan function, the scan image again, has scanned it (portal_antivirus_later).
NEEDS: dict[str, frozenset[str]] = {
    "scan": frozenset({"antivirus", "libmagic"}), "rewrite": frozenset({"arc-key"}),
    "portal": frozenset({"libmagic"}), "avscan": frozenset({"antivirus"}),
    "retrohunt": frozenset({"antivirus", "libmagic"})}


def build_aws(settings: Settings | None = None, *, config: GatewayConfig | None = None,
              mailer: Mailer | None = None, role: str | None = None) -> Runtime:
    """`role`: the stage or "portal" this function serves (its production needs); None: all."""
    from mailmoat.adapters.aws_dynamodb import DynamoDirectory, DynamoStageLedger
    from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
    from mailmoat.adapters.aws_s3 import S3BlobStore
    from mailmoat.adapters.aws_sqs import SqsStageQueue
    from mailmoat.adapters.blob_state import BlobStateStore
    from mailmoat.adapters.clock import SystemClock
    from mailmoat.aws.observability import CloudWatchMetrics
    from mailmoat.bootstrap.common import geoip, production_check, resolver, sandbox
    from mailmoat.pipeline import Services
    from mailmoat.runner import RetryPolicy, Runner
    from mailmoat.runtime import Runtime

    aws = aws_settings(settings)
    directory = DynamoDirectory(aws.directory_table)
    logbook = DynamoMessageLog(aws.message_log_table, retention_days=aws.retention_days)
    routes = {"isolated/": aws.quarantine_bucket} if aws.quarantine_bucket else {}
    blobs = S3BlobStore(aws.raw_bucket, routes=routes)
    notices = _notices(aws)
    isolation, spam, keepmail, archive = _stores(aws)
    mailer_for = (lambda _t: mailer) if mailer is not None else _mailers(aws, logbook, claimed=True)
    detonation, sandbox_config = sandbox(aws)  # CAPE when MAILMOAT_CAPE_URL is set
    own_mail = (lambda _t: mailer) if mailer is not None else _mailers(aws, logbook, claimed=False)
    services = Services(
        settings=aws,
        config=config if config is not None else tenant_config(directory),
        blobs=blobs, directory=directory, log=logbook,
        mailer_for=mailer_for, resolver=resolver(aws), clock=SystemClock(), geoip=geoip(aws),
        antivirus=_antivirus(aws), sandbox=detonation, sandbox_config=sandbox_config,
        isolation=isolation, spam=spam, keepmail=keepmail, archive=archive,
        notices=notices,
        # Digests go to the recipient's mailbox like its mail does, but under no delivery claim.
        own_mail_for=own_mail,
        # Codes to an outside address leave as the gateway's own mail (SES, From the postmaster).
        outside_mail_for=(lambda t: notices) if notices is not None else own_mail,
        before_seal=partial(_before_seal, aws),
        admin=_admin_stores(aws, directory),
        attempts=_attempts(aws),
        converter=_converter(aws, blobs),
    )
    production_check(aws, services, NEEDS.get(role or "", frozenset()) if role else None)
    urls = aws.queue_urls()
    runner = Runner(services, queue=SqsStageQueue(urls), states=BlobStateStore(blobs),
                    ledger=DynamoStageLedger(aws.idempotency_table) if aws.idempotency_table
                    else Unconfigured("the stage ledger", "MAILMOAT_IDEMPOTENCY_TABLE"),
                    policy=RetryPolicy(stage_max_attempts=aws.stage_max_attempts,
                                       delivery_max_attempts=aws.delivery_max_attempts,
                                       base_seconds=aws.delivery_retry_base_seconds,
                                       cap_seconds=SQS_MAX_DELAY_SECONDS),
                    metrics=CloudWatchMetrics())
    return Runtime(settings=aws, services=services, runner=runner, inbox=None,
                   reload_config=lambda: tenant_config(directory),
                   config_refresh_seconds=aws.config_refresh_seconds, raw_bucket=aws.raw_bucket)


class Unconfigured:
    """A port this function's environment does not name (the CLI's send-test report needs the
    message log, not the stage ledger): any use fails with what to set, never silently."""

    def __init__(self, what: str, variable: str) -> None:
        self._what, self._variable = what, variable

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"{self._what} is not configured here (set {self._variable})")


def _before_seal(settings: AwsSettings, tenant: TenantConfig) -> Any:
    """SES delivery rewrites From (DESIGN §1). Doing it after the ARC seal would break the
    seal's message signature (it covers From), so the copies the rewrite stage seals are
    already the forwarded ones; SesMailer then sends them unchanged."""
    if delivery_mode(settings, tenant) != "ses":
        return None
    from mailmoat.aws.forwarder import forwarded, relay_address

    relay = relay_address(tenant.delivery.relay_address or settings.relay_identity)
    return lambda data: forwarded(data, relay)


def _mailers(settings: AwsSettings, logbook: DynamoMessageLog, *, claimed: bool) -> Any:
    """Per tenant, the mailer of its delivery mode. `claimed`: wrapped so that it sends only under
    a delivery claim this process won (every per-message delivery); the digest, which is not a
    message of the log and takes no claim, gets the bare mailer."""
    from mailmoat.adapters.aws_ses import SesMailer
    from mailmoat.adapters.claimed_mailer import ClaimedMailer
    from mailmoat.bootstrap.mailers import mailer_factory

    def ses(tenant: TenantConfig) -> Mailer:
        return SesMailer(tenant.delivery.relay_address or settings.relay_identity,
                         routing_domain=tenant.delivery.routing_domain)

    wrap = (lambda inner: ClaimedMailer(inner, logbook)) if claimed else None
    return mailer_factory(settings, {"ses": ses, "mailmanager": partial(_submission, settings)},
                          mode_of=partial(delivery_mode, settings), wrap=wrap)


def _submission(settings: AwsSettings, tenant: TenantConfig) -> Mailer:
    """Mail Manager delivery: SMTP submission to the stack's AUTH ingress point (port 587,
    STARTTLS required, AUTH), which relays to the tenant's mailbox host with the envelope sender
    preserved. Port 587 because Lambda blocks outbound port 25 (docs/aws-limits.md)."""
    from mailmoat.adapters.aws_secrets import secret_string
    from mailmoat.adapters.smtp import SmtpMailer

    if not (settings.submission_host and settings.submission_secret_arn and settings.submission_username):
        raise ValueError(f"tenant {tenant.name}: delivery.mode=mailmanager needs the stack's AUTH "
                         "ingress point (MAILMOAT_SUBMISSION_HOST, _USERNAME, _SECRET_ARN)")
    password = submission_password(secret_string(settings.submission_secret_arn) or "")
    return SmtpMailer(settings.submission_host, settings.submission_port, require_tls=True,
                      username=settings.submission_username, password=password,
                      local_hostname=settings.smtp_hostname)


def submission_password(secret: str) -> str:
    """The AUTH ingress point's secret holds the password as JSON {"password": …}."""
    import json

    try:
        value = json.loads(secret)
    except ValueError:
        value = None
    password = value.get("password") if isinstance(value, dict) else None
    if not isinstance(password, str) or not password:
        raise ValueError('the submission secret must be JSON with a "password" key')
    return password


def _notices(settings: AwsSettings) -> Mailer | None:
    if not settings.relay_identity:
        return None
    from mailmoat.adapters.aws_ses import SesNoticeSender

    # DSNs leave through SES as our own message (Lambda cannot reach port 25).
    return SesNoticeSender(settings.postmaster)


def _antivirus(settings: AwsSettings) -> Antivirus | None:
    if not settings.clamd_config:  # no image-managed clamd: MAILMOAT_CLAMD_SOCKET as given
        from mailmoat.bootstrap.common import antivirus

        return antivirus(settings)
    from mailmoat.adapters.aws_clamd import ManagedClamd
    from mailmoat.adapters.aws_signatures import S3SignatureMirror

    return ManagedClamd(settings.clamd_socket or "/tmp/clamd.sock",  # noqa: S108
                        command=[settings.clamd_path, f"--config-file={settings.clamd_config}"],
                        mirror=S3SignatureMirror(settings.signature_bucket),
                        signature_dir=settings.signature_dir,
                        start_seconds=settings.clamd_start_seconds)


def portal_antivirus_later(settings: Settings) -> AntivirusLater | None:
    """The portal's verdicts and scan requests (the AvScan function); None when this function's
    environment names no AvScan queue: then what a password opens stays AV_UNCHECKED."""
    from mailmoat.settings import AwsSettings

    if not (isinstance(settings, AwsSettings) and settings.avscan_queue_url
            and settings.isolated_files_table and settings.quarantine_bucket):
        return None
    from mailmoat.adapters.aws_avscan import DynamoAntivirusVerdicts, SqsAntivirusRequests
    from mailmoat.adapters.aws_s3 import S3BlobStore
    from mailmoat.services.rescan import AntivirusLater

    blobs = S3BlobStore(settings.raw_bucket, routes={"isolated/": settings.quarantine_bucket})
    return AntivirusLater(DynamoAntivirusVerdicts(settings.isolated_files_table,
                                                  retention_days=settings.retention_days),
                          SqsAntivirusRequests(blobs, settings.avscan_queue_url))


def _requested_scans(settings: AwsSettings) -> RequestedScans:
    """The AvScan function's parts only (no directory, no message log: its role reads neither)."""
    from mailmoat.adapters.aws_avscan import DynamoAntivirusVerdicts
    from mailmoat.adapters.aws_s3 import S3BlobStore
    from mailmoat.adapters.clock import SystemClock
    from mailmoat.production import require_production
    from mailmoat.services.rescan import RequestedScans

    blobs = S3BlobStore(settings.raw_bucket, routes={"isolated/": settings.quarantine_bucket})
    scans = RequestedScans(blobs=blobs, antivirus=_antivirus(settings),
                           verdicts=DynamoAntivirusVerdicts(settings.isolated_files_table,
                                                            retention_days=settings.retention_days),
                           clock=SystemClock())
    if settings.mode == "production":
        require_production(antivirus=scans.antivirus, arc_key_provisioned=False,
                           adapters={"blobs": blobs, "verdicts": scans.verdicts},
                           needs=NEEDS["avscan"])
    return scans


def _stores(settings: AwsSettings) -> tuple[IsolationStore | None, SpamStore | None,
                                            KeepMailStore | None, ArchiveStore | None]:
    """The stores whose table or bucket this function's environment names; None for the others
    (each user says what it does without one: quarantine, hold, KEEPMAIL_UNAVAILABLE …). A
    store's adapter is imported only where it is named (keep-mail brings argon2, for one)."""
    isolation: IsolationStore | None = None
    spam: SpamStore | None = None
    keepmail: KeepMailStore | None = None
    archive: ArchiveStore | None = None
    if settings.isolated_files_table:
        from mailmoat.adapters.aws_dynamodb_isolation import DynamoIsolationStore

        isolation = DynamoIsolationStore(settings.isolated_files_table)
    if settings.spam_table:
        from mailmoat.adapters.aws_dynamodb_spam import DynamoSpamStore

        spam = DynamoSpamStore(settings.spam_table)
    if settings.keepmail_table:
        from mailmoat.adapters.aws_dynamodb_keepmail import DynamoKeepMailStore

        keepmail = DynamoKeepMailStore(settings.keepmail_table)
    if settings.archive_bucket:
        from mailmoat.adapters.aws_archive import S3ArchiveStore

        archive = S3ArchiveStore(settings.archive_bucket)
    return isolation, spam, keepmail, archive


def _converter(settings: AwsSettings, blobs: BlobStore) -> PdfConverter | None:
    """The ConvertFunction when this function's environment names it; None: convert-pdf
    isolates with CONVERT_UNAVAILABLE (fail closed)."""
    if not (settings.convert_function and settings.quarantine_bucket):
        return None
    from mailmoat.adapters.aws_convert import LambdaPdfConverter

    return LambdaPdfConverter(blobs, settings.convert_function)


def _attempts(settings: AwsSettings) -> AttemptStore | None:
    """The portal's sign-in counters (MAILMOAT_ATTEMPTS_TABLE); the stage functions have none."""
    if not settings.attempts_table:
        return None
    from mailmoat.adapters.aws_dynamodb_attempts import DynamoAttemptStore

    return DynamoAttemptStore(settings.attempts_table)


def _admin_stores(settings: AwsSettings, directory: DynamoDirectory) -> AdminStores:
    """Cognito signs admins in; the directory table holds policy, audit trail and sign-outs."""
    from mailmoat.adapters.aws_admin import DynamoAdminSessions, DynamoAuditLog
    from mailmoat.admin.policy import DirectoryPolicyStore
    from mailmoat.pipeline import AdminStores

    return AdminStores(accounts=None, audit=DynamoAuditLog(directory.table),
                       policy=DirectoryPolicyStore(directory),
                       session_secret=partial(_session_secret, settings),
                       federated_sessions=DynamoAdminSessions(directory.table), federated=True)


def _session_secret(settings: AwsSettings) -> bytes:
    """Every concurrent portal instance must share the cookie key (a file under /tmp would differ
    per instance and sign users out at random): the stack's Secrets Manager secret."""
    from mailmoat.adapters.aws_secrets import secret_string

    if not settings.admin_session_secret_arn:
        raise RuntimeError("no admin session key (MAILMOAT_ADMIN_SESSION_SECRET_ARN)")
    value = (secret_string(settings.admin_session_secret_arn) or "").strip()
    if len(value) < 32:
        raise RuntimeError("the admin session key secret is shorter than 32 characters")
    return value.encode("utf-8")


# --- what the handlers call ---------------------------------------------------------------------

@dataclass(slots=True)
class LambdaEntry:
    """The handlers' object, made at import (cheap: nothing read yet). The settings are read
    from the environment and the runtime is built at the first invocation, both kept for the
    execution environment; the jobs that need no pipeline build only their own adapters."""

    _settings: AwsSettings | None = None  # None: AwsSettings() from the environment at first use
    _runtime: Runtime | None = None

    role: str | None = None  # the stage this function serves: set by its first batch
    _avscans: RequestedScans | None = None
    _converter: tuple[BlobStore, PdfConverter] | None = None

    @property
    def settings(self) -> AwsSettings:
        if self._settings is None:
            from mailmoat.settings import AwsSettings  # pydantic: not at import (cold start)

            self._settings = AwsSettings()  # the ARC key secret is read when the runtime is built
        return self._settings

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = build_aws(self.settings, role=self.role or "jobs")
        return self._runtime

    def run_stage(self, stage: str, refs: Iterable[MessageRef]) -> None:
        from mailmoat.aws.events import check_refs

        refs = list(refs)
        check_refs(stage, refs)  # before anything is built: a misrouted message costs nothing
        self.role = self.role or stage
        if refs:  # an s3:TestEvent names nothing: acknowledged without building anything
            self.runtime.run_stage(stage, refs)

    @property
    def avscans(self) -> RequestedScans:
        if self._avscans is None:
            self._avscans = _requested_scans(self.settings)
        return self._avscans

    def convert(self, event: Any) -> dict[str, Any]:
        """One ConvertFunction invoke: the file under isolated/convert/<id>/ made into a PDF by
        the long-lived LibreOffice of this execution environment (mailmoat.convert.remote)."""
        from mailmoat.convert.remote import handle

        if self._converter is None:
            from mailmoat.adapters.aws_s3 import S3BlobStore
            from mailmoat.convert.libreoffice import LibreOfficePdfConverter

            self._converter = (S3BlobStore(self.settings.raw_bucket,
                                           routes={"isolated/": self.settings.quarantine_bucket}),
                               LibreOfficePdfConverter())
        blobs, converter = self._converter
        return handle(event, blobs, converter)

    def avscan(self, body: str) -> None:
        """One AvScanQueue message: scan the bytes the portal left, record the verdict."""
        self.avscans.run(body)

    def reconcile(self) -> int:
        return self.runtime.reconcile(timedelta(minutes=self.settings.reconcile_after_minutes))

    def send_spam_digests(self, now: datetime | None = None) -> Any:
        """The daily digest of quarantined spam to each recipient who asked for one."""
        from mailmoat.spam.digest import send_digests  # loaded by this function only

        return send_digests(self.runtime.services, now=now or datetime.now(UTC))

    def retrohunt(self, now: datetime | None = None) -> dict[str, Any]:
        """The scheduled retro-hunt check (the scan image: clamd with the published databases):
        a run when the signature state differs from the last complete run's."""
        from mailmoat.retrohunt import RetrohuntReport, scheduled_retrohunt

        self.role = self.role or "retrohunt"
        when = now or datetime.now(UTC)
        report = scheduled_retrohunt(self.runtime.services, when)
        return (report or RetrohuntReport(state=None, since=when, ran=False)).to_dict()

    def sandbox_poll(self, seconds_left: float | None = None) -> dict[str, Any]:
        """The scheduled sandbox poll (every 5 minutes): the files isolated as `analysing`
        decided by mailmoat.sandbox_verdicts. `seconds_left`: the invocation's remaining time;
        no file is started once what is left is less than one file's worst case (two CAPE
        requests, each tried 1 + retries times up to its timeout), so the run ends inside the
        Lambda timeout, before the next run, and the rest wait for it. Without
        MAILMOAT_CAPE_URL: at once, nothing read."""
        import logging
        import time

        from mailmoat.sandbox_verdicts import sandbox_verdicts

        if not self.settings.cape_url:
            return {"sandbox": False}
        self.role = self.role or "sandbox-poll"
        services = self.runtime.services
        tries = 1 + self.settings.cape_retries
        worst = 2 * (tries * self.settings.cape_timeout_seconds + 0.5 * (2 ** tries - 1))
        deadline = time.monotonic() + (seconds_left if seconds_left is not None
                                       else SANDBOX_POLL_SECONDS) - worst
        started = False

        def stop() -> bool:
            nonlocal started
            spent, started = started and time.monotonic() >= deadline, True
            return spent  # the first file is always asked: a budget too small still shows

        run = sandbox_verdicts(services, stop=stop)
        logging.getLogger("mailmoat.sandbox_verdicts").info(
            "sandbox poll", extra={"stage": "sandbox-poll", "action": run.summary()})
        return {"sandbox": True, "clean": run.clean, "danger": run.danger,
                "timed_out": run.timed_out, "waiting": run.waiting, "errors": run.errors,
                "mailed": run.mailed, "mail_failed": len(run.mail_failed)}

    def sync_directory(self) -> dict[str, str]:
        from mailmoat.adapters.aws_dynamodb import DynamoDirectory
        from mailmoat.adapters.aws_secrets import SecretReader
        from mailmoat.aws.jobs import sync_directories

        secrets = SecretReader(self.settings.directory_secret_prefix)
        return sync_directories(DynamoDirectory(self.settings.directory_table), secrets.get)

    def publish_directory(self, event: Mapping[str, Any] | None = None) -> Any:
        """Mail Manager: the address list and the relay routes; classic receiving: the receipt
        rules' recipient conditions."""
        from mailmoat.adapters.aws_dynamodb import DynamoDirectory
        from mailmoat.adapters.aws_ses_rules import SesReceiptRules
        from mailmoat.aws.jobs import publish_address_list, publish_recipients

        if self.settings.ingress == "mailmanager":
            from mailmoat.adapters.aws_mailmanager import MailManagerAddressList, MailManagerRoutes

            routes = (MailManagerRoutes(self.settings.submission_rule_set_id,
                                        prefix=self.settings.relay_prefix,
                                        tag=self.settings.relay_tag)
                      if self.settings.submission_rule_set_id else None)
            return publish_address_list(DynamoDirectory(self.settings.directory_table),
                                        MailManagerAddressList(self.settings.address_list_id),
                                        routes, mode_of=partial(delivery_mode, self.settings),
                                        relay_prefix=self.settings.relay_prefix, event=event)
        base_domains = [d.strip() for d in self.settings.receipt_domains.split(",") if d.strip()]
        return publish_recipients(DynamoDirectory(self.settings.directory_table),
                                  SesReceiptRules(self.settings.receipt_rule_set),
                                  base_rule=self.settings.receipt_rule, base_domains=base_domains,
                                  event=event)

    def update_signatures(self) -> UpdateResult:
        from mailmoat.adapters.aws_signatures import S3SignatureMirror
        from mailmoat.aws.jobs import publish_signatures

        return publish_signatures(S3SignatureMirror(self.settings.signature_bucket),
                                  freshclam=self.settings.freshclam_path,
                                  clamav_mirror=self.settings.clamav_mirror)


@functools.cache
def aws_runtime() -> LambdaEntry:
    """Once per cold start (handlers call it at module level); reads nothing yet."""
    return LambdaEntry()


class LambdaPortal:
    """The portal function's handler: Mangum over the portal app, both built at the first
    request and kept for the execution environment (like LambdaEntry's runtime), so that
    importing the handler module reads settings only and calls no AWS service."""

    def __init__(self, create_app: Callable[..., Any], adapter: Callable[..., Any]) -> None:
        self._create_app, self._adapter = create_app, adapter
        self._asgi: Any = None

    @property
    def asgi(self) -> Any:
        if self._asgi is None:
            from mailmoat.bootstrap import bootstrap

            runtime = bootstrap(role="portal")
            app = self._create_app(runtime, sweep_every=None,
                                   later=portal_antivirus_later(runtime.settings))
            self._asgi = self._adapter(app, lifespan="off")
        return self._asgi

    @property
    def app(self) -> Any:
        """The FastAPI app (tests reach the runtime through app.state)."""
        return self.asgi.app

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        return self.asgi(event, context)
