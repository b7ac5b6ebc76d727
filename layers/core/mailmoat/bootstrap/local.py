"""The local composition root (`mailmoat serve`, `process`, the CLI): files and SQLite under
the data directory, Maildir or SMTP delivery, the stages run in process. The only code besides
bootstrap/aws.py that builds adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mailmoat.config import GatewayConfig, load_config
from mailmoat.pipeline import AdminStores, Services
from mailmoat.ports import ArchiveStore, Mailer, Metrics, PdfConverter
from mailmoat.runner import RetryPolicy, Runner
from mailmoat.runtime import Runtime
from mailmoat.settings import Settings

if TYPE_CHECKING:
    from mailmoat.adapters.sqlite import SqliteDatabase


def build_local(settings: Settings, *, config: GatewayConfig | None = None,
                mailer: Mailer | None = None) -> Runtime:
    from mailmoat.adapters.clock import SystemClock
    from mailmoat.adapters.fs import FsBlobStore
    from mailmoat.adapters.inprocess import InProcessLedger, InProcessQueue, InProcessStateStore
    from mailmoat.adapters.maildir import MaildirMailer
    from mailmoat.adapters.outbound_smtp import OutboundSmtp
    from mailmoat.adapters.sqlite import SqliteDatabase, SqliteDirectory, SqliteMessageLog
    from mailmoat.adapters.sqlite_admin import stored_policy
    from mailmoat.adapters.sqlite_attempts import SqliteAttemptStore
    from mailmoat.adapters.sqlite_isolation import SqliteIsolationStore
    from mailmoat.adapters.sqlite_keepmail import SqliteKeepMailStore
    from mailmoat.adapters.sqlite_spam import SqliteSpamStore
    from mailmoat.bootstrap.common import antivirus, geoip, production_check, resolver, sandbox
    from mailmoat.bootstrap.mailers import mailer_factory

    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    db = SqliteDatabase(data / "mailmoat.sqlite3")
    if config is None:
        config = load_config(settings.config)
    maildir = MaildirMailer(data / "maildir")
    mailer_for = (lambda _tenant: mailer) if mailer is not None else mailer_factory(
        settings, {"maildir": lambda _tenant: maildir})
    dns = resolver(settings)
    detonation, sandbox_config = sandbox(settings)  # CAPE when MAILMOAT_CAPE_URL is set
    services = Services(
        settings=settings,
        config=stored_policy(db, config),  # tenant policy saved in the admin console over the TOML
        blobs=FsBlobStore(data / "blobs"),
        directory=SqliteDirectory(db),
        log=SqliteMessageLog(db),
        mailer_for=mailer_for,
        resolver=dns,
        clock=SystemClock(),
        geoip=geoip(settings),
        antivirus=antivirus(settings),
        sandbox=detonation,
        sandbox_config=sandbox_config,
        isolation=SqliteIsolationStore(db),
        spam=SqliteSpamStore(db),
        keepmail=SqliteKeepMailStore(db),
        archive=_archive(settings),
        notices=OutboundSmtp(dns, port=settings.outbound_smtp_port, relay=settings.notice_relay,
                             local_hostname=settings.smtp_hostname),
        own_mail_for=mailer_for,
        # A keep-mail code to the recipient's alternate address: locally through the tenant's
        # own path too, so the demo's codes land in its Maildirs.
        outside_mail_for=mailer_for,
        before_seal=lambda _tenant: None,
        attempts=SqliteAttemptStore(db),
        admin=_admin_stores(db, data),
        converter=_converter(),
    )
    production_check(settings, services)
    queue = InProcessQueue()
    runner = Runner(services, queue=queue, states=InProcessStateStore(), ledger=InProcessLedger(),
                    policy=RetryPolicy(stage_max_attempts=settings.stage_max_attempts,
                                       delivery_max_attempts=settings.delivery_max_attempts,
                                       base_seconds=settings.delivery_retry_base_seconds),
                    metrics=_metrics(settings))
    runtime = Runtime(settings=settings, services=services, runner=runner, inbox=queue)
    runtime.sync_config_to_directory()
    return runtime


def _converter() -> PdfConverter | None:
    """LibreOffice when soffice is installed, built on the first convert-pdf and stopped at
    exit; None otherwise (convert-pdf isolates with CONVERT_UNAVAILABLE)."""
    import atexit
    import shutil

    if shutil.which("soffice") is None:
        return None
    from mailmoat.convert.lazy import LazyPdfConverter
    from mailmoat.convert.libreoffice import LibreOfficePdfConverter

    converter = LazyPdfConverter(LibreOfficePdfConverter)
    atexit.register(converter.close)
    return converter


def _metrics(settings: Settings) -> Metrics | None:
    """Prometheus counters when `mailmoat serve` collects them (it sets metrics_dir); none for
    one-shot commands such as `mailmoat process`."""
    if settings.metrics_dir is None:
        return None
    from mailmoat.adapters.prometheus import PrometheusMetrics

    return PrometheusMetrics()


def _archive(settings: Settings) -> ArchiveStore:
    """Write-once originals: an Object Lock bucket when one is named, else a directory."""
    if settings.archive_bucket:
        from mailmoat.adapters.aws_archive import S3ArchiveStore

        return S3ArchiveStore(settings.archive_bucket)
    from mailmoat.adapters.fs import FsBlobStore
    from mailmoat.archive import BlobArchive, archive_root

    return BlobArchive(FsBlobStore(archive_root(settings)))


def _admin_stores(db: SqliteDatabase, data: Path) -> AdminStores:
    from mailmoat.adapters.sqlite_admin import SqliteAdminStore
    from mailmoat.admin.secret import load_or_create_secret

    store = SqliteAdminStore(db)
    return AdminStores(accounts=store, audit=store, policy=store,
                       session_secret=lambda: load_or_create_secret(data / "admin" / "session.key"))


def with_private_antivirus(settings: Settings) -> Settings:
    """`mailmoat serve` without MAILMOAT_CLAMD_SOCKET: a private clamd when ClamAV and its
    signatures are installed (stopped at exit), else one line saying why not."""
    if settings.clamd_socket:
        return settings
    from mailmoat.adapters.private_clamd import antivirus_for_serve

    address = antivirus_for_serve(settings.data_dir)
    if not address:
        return settings
    os.environ["MAILMOAT_CLAMD_SOCKET"] = address  # the CLI's other commands in this process
    return settings.model_copy(update={"clamd_socket": address})
