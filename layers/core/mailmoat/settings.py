"""Process settings from MAILMOAT_* environment variables: pydantic models that fill what the
caller did not pass from the environment (a small reader, so that no runtime, the Lambda cold
start least of all, pays for importing pydantic-settings)."""

from __future__ import annotations

import json
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo


class NoDecode:
    """Field marker (Annotated[…, NoDecode]): the variable's text goes to the field's validator
    as it is, never decoded as JSON first."""


def _is_complex(annotation: Any) -> bool:
    """Lists, dicts, sets, tuples and models come from a variable as JSON (pydantic-settings'
    rule); scalars (str, int, bool, Path, Literal …) as text that pydantic converts."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _is_complex(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_is_complex(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin in (list, dict, set, frozenset, tuple):
        return True
    return isinstance(annotation, type) and issubclass(annotation, (BaseModel, list, dict, set, tuple))


def _from_environment(name: str, field: FieldInfo, text: str) -> Any:
    if any(isinstance(m, NoDecode) or m is NoDecode for m in field.metadata) \
            or not _is_complex(field.annotation):
        return text
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{name}: not JSON ({error})") from None


class EnvSettings(BaseModel):
    """A model whose fields the caller does not pass come from `<env_prefix><field name>`
    (case-insensitive; an empty value is a value). What it reads is validated like any value."""

    model_config = ConfigDict(extra="ignore", validate_default=True, defer_build=True)
    env_prefix: ClassVar[str] = "MAILMOAT_"

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**self.environment(), **values})

    @classmethod
    def environment(cls) -> dict[str, Any]:
        """The values this environment sets for this model's fields."""
        prefix = cls.env_prefix.lower()
        found = {key.lower(): text for key, text in os.environ.items()
                 if key.lower().startswith(prefix)}
        return {name: _from_environment(prefix + name, field, found[prefix + name])
                for name, field in cls.model_fields.items() if prefix + name in found}


class Limits(EnvSettings):
    """Bounds on work done for one untrusted message (STYLE habit 4). Hitting one is a finding."""

    env_prefix: ClassVar[str] = "MAILMOAT_LIMIT_"

    max_parts: int = 5000
    max_depth: int = 50
    max_header_bytes: int = 1_000_000
    archive_max_members: int = 10_000
    archive_max_depth: int = 5
    archive_max_expanded_bytes: int = 200 * 1024 * 1024
    archive_max_ratio: int = 200
    scan_seconds: float = 20.0


class AnalysisSettings(EnvSettings):
    """The analysis backends that run here (issue 16 item 3): Excel 4.0 macro emulation and
    YARA-X. Read by the scan modules themselves (mailmoat.scan.xlm, mailmoat.scan.yara_rules)."""

    env_prefix: ClassVar[str] = "MAILMOAT_"

    xlm_timeout_seconds: float = Field(default=15.0, gt=0)  # one workbook's emulation child
    xlm_memory_bytes: int = Field(default=1 << 30, gt=0)  # the child's RLIMIT_AS
    # Operator YARA rules (*.yar, *.yara), compiled beside the project's own; looked at again
    # for changes at most every yara_reload_check_seconds.
    yara_rules_dir: Path | None = None
    yara_reload_check_seconds: float = Field(default=10.0, ge=0)
    yara_max_bytes: int = Field(default=16 << 20, gt=0)  # of each file and member scanned
    yara_timeout_seconds: int = Field(default=5, ge=1)


class Settings(EnvSettings):
    # "production" refuses to start without antivirus, libmagic, a provisioned sealing key and
    # real adapters (mailmoat.production); "dev" and "test" allow them. AWS: production.
    mode: Literal["production", "dev", "test"] = "dev"
    runtime: Literal["local", "aws"] = "local"

    data_dir: Path = Path("var")
    config: Path | None = None  # tenant configuration TOML (local)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    # Connection limits (like Postfix's smtpd_client_connection_count_limit): beyond them a new
    # connection gets 421 4.7.0 and is closed. The command timeout closes an idle session.
    smtp_max_connections: int = Field(default=200, ge=1)
    smtp_max_connections_per_ip: int = Field(default=20, ge=1)
    smtp_command_timeout_seconds: float = Field(default=300.0, gt=0)
    # From DATA to its final dot, however the bytes trickle in (RFC 5321 §4.5.3.2 gives a client
    # 10 minutes for the termination): a slow sender cannot hold a session for longer.
    smtp_data_timeout_seconds: float = Field(default=600.0, gt=0)
    smtp_hostname: str = "mailmoat.localhost"
    # STARTTLS on the listener (mailmoat.local.tls): the operator's PEM certificate chain and
    # key, looked at again for changes at most every tls_reload_check_seconds. tls_self_signed
    # (`make run`): without a configured pair, generate one once into <data_dir>/tls.
    # tls_required: 530 to MAIL (to all but EHLO/NOOP/QUIT, RFC 3207 §4) before STARTTLS; for a
    # listener that is not a public MX (RFC 3207 §4 forbids a publicly-referenced one to).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    tls_required: bool = False
    tls_reload_check_seconds: float = Field(default=5.0, ge=0)
    max_message_bytes: int = 40 * 1024 * 1024  # SES inbound accepts up to 40 MB
    portal_host: str = "127.0.0.1"
    portal_port: int = 8080
    # The portal's own limits (mailmoat.local.portal_server): 2,000 connections holding partial
    # headers stayed open for minutes before. A request's headers must arrive within the header
    # timeout and its body within the body timeout; an idle keep-alive connection closes after
    # the keep-alive timeout or after keepalive_requests requests. Connections beyond the caps
    # (per client address, in total) are closed at once; past the concurrency (uvicorn's
    # limit_concurrency: connections or requests in flight) a request gets 503.
    portal_header_timeout_seconds: float = Field(default=10.0, gt=0)
    portal_body_timeout_seconds: float = Field(default=60.0, gt=0)
    portal_keepalive_seconds: int = Field(default=5, ge=1)
    portal_keepalive_requests: int = Field(default=100, ge=1)
    portal_max_connections: int = Field(default=256, ge=1)
    portal_max_connections_per_ip: int = Field(default=32, ge=1)
    portal_max_concurrency: int = Field(default=128, ge=1)
    portal_base_url: str | None = None
    # Prometheus /metrics of `mailmoat serve` on its own port (0: none); loopback unless set.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9465, ge=0, le=65535)
    # Set by `mailmoat serve` (its data dir's metrics/): the pipeline's processes count there.
    metrics_dir: Path | None = None

    dns_zone: Path | None = None  # offline zone file (DESIGN §9); otherwise live DNS
    # With dns_zone: names the file lists come from it, every other name from live DNS (the
    # demo's `make run`); without this, a name missing from the file is NXDOMAIN (offline).
    dns_zone_overlay: bool = False
    dns_timeout: float = 3.0
    geoip_db: Path | None = None
    clamd_socket: str | None = None  # unix socket path or host:port
    arc_key_file: Path | None = None
    # Keys not configured (the ARC key, the spam digest's link key) are generated once under the
    # data directory (local evaluation; production mode refuses an ARC key that was not
    # provisioned). AWS: never — every instance must use the stack's secrets.
    generate_keys: bool = True
    arc_selector: str = "mailmoat"
    arc_domain: str | None = None
    authserv_id: str = "mailmoat"

    # Archive of originals (tenant option `archive`): a directory locally (default
    # <data_dir>/archive), an S3 bucket (Object Lock) on AWS when `archive_bucket` is set.
    archive_dir: Path | None = None
    archive_bucket: str = ""
    # The gateway's own address for mail it writes (DSNs, spam digests, archive journal,
    # keep-mail codes). Default: postmaster@<smtp_hostname>; read it as `settings.postmaster`.
    postmaster_address: str | None = None
    # Outbound path for notices to senders (DSNs): a smarthost "host:port"; unset → the
    # sender domain's MX hosts (port `outbound_smtp_port`), as any MTA sends a bounce.
    notice_relay: str | None = None
    outbound_smtp_port: int = 25

    # Maintenance switch: accept and store mail but do not process it until restarted without.
    hold_processing: bool = False
    # SIGTERM to `mailmoat serve`: the listener closes at once, then each worker gets this long to
    # finish the stage it is running (the rest stays queued in the message log for the restart).
    # Below systemd's TimeoutStopSec (90 s), which would SIGKILL.
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)

    # `mailmoat serve`'s clock (AWS: the scheduled functions). 0 / None turns a job off.
    schedule_directory_sync_minutes: int = 60  # tenants with a [tenant.directory] provider
    schedule_spam_digest_hour: int | None = Field(default=8, ge=0, le=23)  # local time
    # How often `serve` compares the signature state (clamd version + YARA rules version) with
    # the last retro-hunt's (mailmoat.retrohunt); 0 turns the check off. A run is bounded by
    # a file cap and a time budget; what is left goes on at the next check.
    schedule_retrohunt_minutes: int = Field(default=15, ge=0)
    retrohunt_max_files: int = Field(default=5000, ge=1)
    retrohunt_seconds: float = Field(default=600.0, gt=0)
    # How often files in the sandbox are asked for their verdict (mailmoat.sandbox_verdicts);
    # 0 turns the job off. The scheduler ticks every 30 s, so less than that is 30 s.
    schedule_sandbox_poll_seconds: int = Field(default=60, ge=0)

    # A stage that raises or is interrupted this often holds the message (a poison message);
    # on AWS equal to the stage queues' maxReceiveCount.
    stage_max_attempts: int = 3
    delivery_max_attempts: int = 8
    delivery_retry_base_seconds: float = 30.0

    # Spam verdict sources (docs/spam.md). rspamd: its normal worker's URL (POST /checkv2).
    rspamd_url: str | None = None
    rspamd_timeout: float = 15.0
    # DNS blocklists, comma-separated or a JSON list: IP zones (zen.spamhaus.org style) are asked
    # for the connecting IP, domain zones (dbl.spamhaus.org style) for the registrable domains of
    # the body's URLs. "zone=127.0.0.2|127.0.0.4" counts only those return codes as listed.
    dnsbl_ip_zones: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dnsbl_domain_zones: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dnsbl_max_domains: int = 20  # URL domains asked per message; more is a finding
    # X-SES-Spam-Verdict as a source: default on the AWS runtime only (SES writes it there;
    # elsewhere the sender could).
    ses_spam_verdict: bool | None = None
    # Signing key of the spam digest's links: a file (AWS: the root writes the stack's secret to
    # one), else generated once (0600) under the data directory where generate_keys allows.
    spam_link_secret_file: Path | None = None

    limits: Limits = Field(default_factory=Limits)

    @field_validator("dnsbl_ip_zones", "dnsbl_domain_zones", mode="before")
    @classmethod
    def _zone_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [z for z in text.replace(",", " ").split() if z]
        return value

    @property
    def postmaster(self) -> str:
        return self.postmaster_address or f"postmaster@{self.smtp_hostname}"

    # CAPE sandbox (adapters/cape.py, docs/sandbox.md): set the URL to detonate the files the
    # static checks call risky. The token (Authorization: Token …) from the variable or a file.
    # timeout: each HTTP request; analysis: how long a file waits for its verdict (then
    # SANDBOX_TIMEOUT); the breaker opens after that many failed requests in a row for the
    # cool-down (SCAN_FAILED "sandbox unavailable" meanwhile). malscore above the danger score
    # is SANDBOX_MALICIOUS, at least the suspicious score SANDBOX_SUSPICIOUS.
    cape_url: str | None = None
    cape_token: SecretStr | None = None
    cape_token_file: Path | None = None
    cape_timeout_seconds: float = Field(default=30.0, gt=0)
    cape_retries: int = Field(default=2, ge=0, le=10)
    cape_analysis_seconds: float = Field(default=300.0, gt=0)
    cape_poll_seconds: float = Field(default=10.0, gt=0)
    # The scan stage waits this long for a verdict; then the file is isolated as `analysing`
    # and the poll job decides it (set it to cape_analysis_seconds to wait in the stage).
    cape_wait_inline_seconds: float = Field(default=5.0, ge=0)
    cape_breaker_failures: int = Field(default=5, ge=1)
    cape_breaker_cooldown_seconds: float = Field(default=60.0, ge=0)
    cape_danger_score: float = Field(default=7.0, ge=0, le=10)
    cape_suspicious_score: float = Field(default=4.0, ge=0, le=10)
    cape_max_report_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)

    @property
    def portal_url(self) -> str:
        return self.portal_base_url or f"http://{self.portal_host}:{self.portal_port}"


class AwsSettings(Settings):
    """Names of this deployment's resources, set by template.yaml as MAILMOAT_* variables."""

    raw_bucket: str = ""
    quarantine_bucket: str = ""
    signature_bucket: str = ""
    message_log_table: str = ""
    directory_table: str = ""
    isolated_files_table: str = ""
    idempotency_table: str = ""
    attempts_table: str = ""  # the portal's sign-in counters (mailmoat.attempts)
    # "stage=url,…": a stage function names its own queue (retries) and the next stage's; the
    # reconciler names all five (it re-queues any stage).
    stage_queue_urls: str = ""
    # The AvScan function's queue (portal): antivirus scans of what a password opened.
    avscan_queue_url: str = ""
    # The ConvertFunction (LibreOffice image) the isolate stage and the portal invoke for
    # convert-pdf; empty: no converter (CONVERT_UNAVAILABLE).
    convert_function: str = ""
    delivery_mode: str = "ses"
    retention_days: int = 30  # raw mail, quarantine, log rows and portal links
    relay_identity: str = ""
    arc_key_secret_arn: str = ""
    receipt_rule_set: str = ""
    receipt_rule: str = ""  # the stack's rule: actions and settings the per-tenant rules copy
    receipt_domains: str = ""  # the Domains parameter, comma-separated: what the stack's rule accepts
    # How mail comes in: "mailmanager" (SES Mail Manager ingress point, address list checked in
    # the SMTP session) or "receipt-rules" (classic SES receiving); the template's Ingress.
    ingress: Literal["mailmanager", "receipt-rules"] = "mailmanager"
    address_list_id: str = ""  # Mail Manager: the registered recipients (DirectoryPublish keeps it)
    # Mail Manager delivery: Deliver submits to the stack's AUTH ingress point (SMTP submission,
    # STARTTLS, AUTH with the stack's secret); its rule set relays to each tenant's mailbox host.
    submission_host: str = ""  # the AUTH ingress point's A record
    submission_port: int = 587
    submission_username: str = ""  # the AUTH ingress point's id (inp-…) is the SMTP user name
    submission_secret_arn: str = ""
    submission_rule_set_id: str = ""  # DirectoryPublish writes the relay routes into it
    relay_prefix: str = ""  # our Mail Manager relays' names: "<stack>-relay"
    relay_tag: str = ""  # their mailmoat-stack tag: the IAM conditions let us touch only those
    # The admin console's sign-in (portal): the user pool, its app client and the managed-login
    # domain ("<prefix>.auth.<region>.amazoncognito.com"); web/mailmoat_web/admin/oidc.py.
    cognito_user_pool_id: str = ""
    cognito_client_id: str = ""
    cognito_domain: str = ""
    admin_session_secret_arn: str = ""  # signs console cookies alike in every portal instance
    # Per-recipient spam quarantine (authenticate, deliver, portal, digest) and the key of the
    # digest's signed links (portal, digest).
    spam_table: str = ""
    spam_link_secret_arn: str = ""  # the digest links' key (portal, digest): see spam_link_secret_file
    keepmail_table: str = ""  # kept copies' index rows and the keep-mail sign-in (deliver, portal)
    directory_secret_prefix: str = ""  # Secrets Manager names of the directory providers' secrets
    # ClamAV on Lambda: freshclam in the signature-update function, clamd in the scan function.
    freshclam_path: str = "freshclam"
    clamav_mirror: str = "database.clamav.net"
    clamd_path: str = "clamd"
    clamd_config: str = ""  # set by the scan image (functions/scan/Dockerfile): start clamd lazily
    signature_dir: Path = Path("/tmp/clamav")  # noqa: S108 - the DatabaseDirectory of that clamd.conf
    clamd_start_seconds: float = 120.0
    mode: Literal["production", "dev", "test"] = "production"
    generate_keys: bool = False  # the keys are the stack's secrets
    ses_spam_verdict: bool | None = True  # SES wrote X-SES-Spam-Verdict itself here
    # The stage queues' maxReceiveCount: the attempt that passes it records `held`.
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
