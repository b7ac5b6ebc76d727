"""Archive of originals (issue 9): write-once, byte-identical, journalled at most once, exclusions."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_archive import S3ArchiveStore
from mailmoat.adapters.fs import FsBlobStore
from mailmoat.archive import (
    BlobArchive,
    archive_key,
    attached_original,
    exclusion,
    journal_message,
    received_at,
)
from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig, load_config
from mailmoat.context import Envelope, MessageContext
from mailmoat.runtime import Runtime
from mailmoat.scan.engine import CACHE
from mailmoat.settings import Settings
from tests.unit.isolation.builders import DEMO, EICAR_LIKE, ZONE, SignatureAntivirus, message
from tests.unit.keepmail.helpers import deliver, maildir

JOURNAL = "journal@example.test"


def archiving_config(**tenant: object) -> GatewayConfig:
    config = load_config(DEMO)
    values = {"archive": True, "archive_journal_address": JOURNAL, **tenant}
    return GatewayConfig(tenant=[config.tenants[0].model_copy(update=values)])


def make(tmp_path: Path, **tenant: object) -> Runtime:
    CACHE.clear()
    settings = Settings(mode="test", config=DEMO, dns_zone=ZONE, data_dir=tmp_path / "var")
    runtime = bootstrap(settings, config=archiving_config(**tenant))
    runtime.services.antivirus = SignatureAntivirus()
    return runtime


def risky_message() -> bytes:
    return message(("tool.exe", b"MZ\x90\x00" + b"\x00" * 64, "application/octet-stream"),
                   subject="請求書 / invoice")


def test_archive_holds_the_byte_identical_original_of_an_isolated_message(tmp_path: Path) -> None:
    runtime = make(tmp_path)
    raw = risky_message()
    message_id, ctx = deliver(runtime, raw)
    assert "isolate" in ctx.actions and ctx.outputs["alice@example.test"] != raw
    store = runtime.services.archive
    assert store is not None
    key = archive_key(ctx, received_at(ctx, runtime.services))
    assert key.startswith(f"{message_id[:4]}/{message_id[4:6]}/{message_id[6:8]}/example.test/")
    assert store.get(key) == raw == runtime.services.blobs.get(f"raw/{message_id}")
    assert ctx.raw == raw  # isolation and rewrite never touched the original
    record = runtime.services.log.get(message_id)
    assert record is not None and record.state == "delivered"
    assert {"archive", "journal"} <= set(record.report["actions"])
    assert runtime.services.log.delivery_outcome(message_id, "archive") == f"archived: {key}"
    # On disk, under the archive root, apart from the blob store.
    assert (runtime.settings.data_dir / "archive" / key).read_bytes() == raw


def test_a_rerun_neither_overwrites_the_archive_nor_journals_twice(tmp_path: Path) -> None:
    runtime = make(tmp_path)
    raw = risky_message()
    message_id, ctx = deliver(runtime, raw)
    key = archive_key(ctx, received_at(ctx, runtime.services))
    store = runtime.services.archive
    assert store is not None
    assert store.put_once(key, b"something else") is False
    runtime.runner.redrive(message_id)  # every stage again
    again = runtime.process_stored(message_id)
    assert again is not None and "journal" in again.actions
    assert store.get(key) == raw
    assert list(store.keys()) == [key]
    assert len(maildir(runtime, JOURNAL)) == 1
    assert runtime.services.log.delivery_outcome(message_id, f"journal:{JOURNAL}").startswith("delivered")


def test_the_journal_copy_carries_the_original_unchanged(tmp_path: Path) -> None:
    runtime = make(tmp_path)
    raw = risky_message()
    _message_id, _ctx = deliver(runtime, raw)
    (journal_file,) = maildir(runtime, JOURNAL)
    delivered = journal_file.read_bytes()
    parsed = email.message_from_bytes(delivered, policy=policy.default)
    assert parsed["From"] == "postmaster@mailmoat.localhost"
    assert parsed["To"] == JOURNAL
    assert str(parsed["Subject"]) == "[journal] 請求書 / invoice"
    attached = [p for p in parsed.walk() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1 and attached[0].get_content_disposition() == "attachment"
    # Maildir stores every message with LF line ends; inside, the original is byte for byte.
    assert attached_original(delivered) == raw.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("raw", [
    b"From: a@sender.example\r\nSubject: crlf\r\n\r\nbody\r\n",
    b"From: a@sender.example\nSubject: lf\n\nbody without final newline",
    "From: a@sender.example\r\nSubject: =?utf-8?b?5pel5pys?=\r\n\r\n生の8bit本文\r\n".encode(),
    b"From: a@sender.example\r\n\r\n--=_mailmoat-journal-\r\n" + b"x" * 2000 + b"\r\n\x00\r\n",
])
def test_journal_message_embeds_the_exact_bytes(raw: bytes) -> None:
    from datetime import UTC, datetime

    ctx = MessageContext(id="20261127T100000Z-0123456789abcdef", raw=raw,
                         envelope=Envelope(mail_from="a@sender.example", rcpt_to=["alice@example.test"]),
                         subject="件名")
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    journal = journal_message(raw, sender="postmaster@gw.example", to=JOURNAL, ctx=ctx, when=now, now=now)
    inner = attached_original(journal)
    assert inner == (raw if raw.endswith((b"\n",)) else raw + b"\n")
    parsed = email.message_from_bytes(journal, policy=policy.default)
    assert [p.get_content_type() for p in parsed.walk()][:3] == ["multipart/mixed", "text/plain", "message/rfc822"]
    cte = next(p for p in parsed.walk() if p.get_content_type() == "message/rfc822")["Content-Transfer-Encoding"]
    assert cte == ("binary" if b"\x00" in raw else "8bit" if not raw.isascii() else "7bit")


def test_virus_deleted_mail_is_not_archived(tmp_path: Path) -> None:
    runtime = make(tmp_path)
    raw = message(("invoice.pdf", b"%PDF-1.4\n" + EICAR_LIKE, "application/pdf"))
    _message_id, ctx = deliver(runtime, raw)
    assert any("VIRUS" in a.symbols for a in ctx.attachments)
    assert exclusion(ctx) == "virus deleted"
    assert "archive" not in ctx.actions and not list(runtime.services.archive.keys())
    assert maildir(runtime, JOURNAL) == []
    assert maildir(runtime, "alice@example.test")  # the recipient still gets the cleaned copy


def test_spam_quarantined_and_undelivered_mail_is_not_archived() -> None:
    ctx = MessageContext(id="x", raw=b"", envelope=Envelope(rcpt_to=["alice@example.test"]))
    ctx.envelope.rcpt_to.append("bob@example.test")
    ctx.deliveries["alice@example.test"] = "delivered: maildir"
    ctx.deliveries["bob@example.test"] = "quarantined: spam"
    assert exclusion(ctx) is None  # alice's mailbox has it: archived
    ctx.deliveries["alice@example.test"] = "quarantined: spam"
    assert exclusion(ctx) == "spam quarantined"
    from mailmoat.context import Disposition

    ctx.disposition = Disposition.QUARANTINE
    assert exclusion(ctx) == "disposition quarantine"


def test_tenant_without_archive_stores_nothing(tmp_path: Path) -> None:
    runtime = make(tmp_path, archive=False)
    _message_id, ctx = deliver(runtime, risky_message())
    assert "archive" not in ctx.actions
    assert not list(runtime.services.archive.keys())
    assert maildir(runtime, JOURNAL) == []


class BrokenArchive:
    def put_once(self, key: str, data: bytes) -> bool:
        raise OSError("disk full")


def test_a_failing_archive_never_breaks_delivery(tmp_path: Path) -> None:
    runtime = make(tmp_path)
    runtime.services.archive = BrokenArchive()  # type: ignore[assignment]
    message_id, ctx = deliver(runtime, risky_message())
    assert ctx.has("ARCHIVE_FAILED")
    record = runtime.services.log.get(message_id)
    assert record is not None and record.state == "delivered"
    assert maildir(runtime, "alice@example.test") and maildir(runtime, "bob@example.test")


def test_blob_archive_is_write_once(tmp_path: Path) -> None:
    archive = BlobArchive(FsBlobStore(tmp_path / "archive"))
    assert archive.put_once("2026/11/27/t/a.eml", b"first") is True
    assert archive.put_once("2026/11/27/t/a.eml", b"second") is False
    assert archive.get("2026/11/27/t/a.eml") == b"first"


def test_s3_archive_is_write_once_under_object_lock() -> None:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="mailmoat-archive", ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(Bucket="mailmoat-archive", ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}}})
        archive = S3ArchiveStore("mailmoat-archive", client=client)
        key = "2026/11/27/example.test/20261127T100000Z-0123456789abcdef.eml"
        assert archive.put_once(key, b"original") is True
        assert archive.put_once(key, b"replacement") is False
        assert archive.get(key) == b"original"
        head = client.head_object(Bucket="mailmoat-archive", Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE" and head["ServerSideEncryption"] == "AES256"


def test_archive_bucket_setting_selects_s3_in_either_root(tmp_path: Path) -> None:
    from mailmoat.bootstrap.aws import _stores
    from mailmoat.settings import AwsSettings

    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="from-env")
        settings = Settings(mode="test", config=DEMO, dns_zone=ZONE, data_dir=tmp_path / "var",
                            archive_bucket="from-env")
        store = bootstrap(settings, config=archiving_config()).services.archive
        assert isinstance(store, S3ArchiveStore) and store.bucket == "from-env"
        on_aws = _stores(AwsSettings(archive_bucket="from-env"))[3]
        assert isinstance(on_aws, S3ArchiveStore) and on_aws.bucket == "from-env"
        assert _stores(AwsSettings())[3] is None  # no archive bucket in this stack
