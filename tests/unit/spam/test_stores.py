"""The spam store contract on both adapters: SQLite (real file) and DynamoDB (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_dynamodb_spam import DynamoSpamStore
from mailmoat.adapters.sqlite import SqliteDatabase
from mailmoat.adapters.sqlite_spam import SqliteSpamStore
from mailmoat.ports import SpamStore
from mailmoat.settings import AwsSettings
from mailmoat.spam import digest
from mailmoat.spam.quarantine import HeldMessage
from tests.conftest import use_aws_test_credentials

NOW = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[SpamStore]:
    if request.param == "sqlite":
        yield SqliteSpamStore(SqliteDatabase(tmp_path / "mailmoat.sqlite3"))
        return
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        boto3.client("dynamodb").create_table(
            TableName="spam", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        yield DynamoSpamStore("spam")


def held(message_id: str = "m1", recipient: str = "alice@corp.example", days: int = 30,
         tenant: str = "corp", at: datetime = NOW) -> HeldMessage:
    return HeldMessage(message_id=message_id, recipient=recipient, tenant=tenant, held_at=at,
                       expires_at=at + timedelta(days=days), blob_key=f"spamq/{message_id}/{recipient}",
                       mail_from="promo@sender.example", from_header="Promo <promo@sender.example>",
                       subject="件名 & <b>", date="Fri, 27 Nov 2026 10:00:00 +0000", score=7.25,
                       sources=["rspamd", "dnsbl:zen.example"])


def test_save_get_and_first_record_wins(store: SpamStore) -> None:
    store.save(held())
    got = store.get("m1", "Alice@Corp.example")
    assert got is not None
    assert (got.subject, got.score, got.sources, got.state) == (
        "件名 & <b>", 7.25, ["rspamd", "dnsbl:zen.example"], "held")
    assert got.held_at == NOW and got.expires_at == NOW + timedelta(days=30)
    store.mark_digested([("m1", "alice@corp.example")], NOW)
    store.save(held())  # a pipeline re-run
    again = store.get("m1", "alice@corp.example")
    assert again is not None and again.digested_at == NOW
    assert store.get("m1", "bob@corp.example") is None


def test_views_digest_release_and_expiry(store: SpamStore) -> None:
    store.save(held("m1"))
    store.save(held("m2", at=NOW + timedelta(hours=1)))
    store.save(held("m1", "bob@corp.example"))
    store.save(held("m3", "carol@other.example", tenant="other", days=1))
    assert [(h.message_id, h.recipient) for h in store.held(tenant="corp")] == [
        ("m1", "alice@corp.example"), ("m2", "alice@corp.example"), ("m1", "bob@corp.example")]
    assert len(store.held(recipient="alice@corp.example")) == 2
    assert [h.message_id for h in store.pending_digest(NOW, "other")] == ["m3"]
    store.mark_digested([("m1", "alice@corp.example")], NOW)
    assert [(h.message_id, h.recipient) for h in store.pending_digest(NOW, "corp")] == [
        ("m2", "alice@corp.example"), ("m1", "bob@corp.example")]
    store.mark_released("m2", "alice@corp.example", NOW, "link")
    store.mark_released("m2", "alice@corp.example", NOW + timedelta(hours=2), "admin")  # no-op
    released = store.get("m2", "alice@corp.example")
    assert released is not None and (released.state, released.released_by) == ("released", "link")
    assert [h.message_id for h in store.held(recipient="alice@corp.example")] == ["m1"]
    later = NOW + timedelta(days=2)
    assert [h.message_id for h in store.expired(later)] == ["m3"]
    assert store.held(now=later, tenant="other") == []
    store.delete("m3", "carol@other.example")
    assert store.get("m3", "carol@other.example") is None


def test_allowed_senders(store: SpamStore) -> None:
    assert store.allowed_senders("alice@corp.example") == []
    store.allow_sender("Alice@corp.example", "Promo@Sender.example", NOW)
    store.allow_sender("alice@corp.example", "@partner.example", NOW)
    store.allow_sender("alice@corp.example", "promo@sender.example", NOW)
    assert store.allowed_senders("alice@corp.example") == ["@partner.example", "promo@sender.example"]
    assert store.allowed_senders("bob@corp.example") == []


def test_aws_runtime_uses_the_table_and_the_secrets_manager_key(monkeypatch: pytest.MonkeyPatch) -> None:
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        boto3.client("dynamodb").create_table(
            TableName="spam-aws", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        arn = boto3.client("secretsmanager").create_secret(
            Name="stack/spam-link-key", SecretString="k" * 64)["ARN"]
        from mailmoat.bootstrap.aws import _stores, aws_settings

        assert _stores(AwsSettings())[1] is None  # no table in this stack: no store
        # The root writes the stack's secret to a private file once per cold start.
        settings = aws_settings(AwsSettings(spam_table="spam-aws", spam_link_secret_arn=arn,
                                            portal_base_url="https://portal.example"))
        assert settings.spam_link_secret_file is not None
        assert settings.spam_link_secret_file.stat().st_mode & 0o077 == 0
        store = _stores(settings)[1]
        assert isinstance(store, DynamoSpamStore)
        store.save(held())
        assert store.get("m1", "alice@corp.example") is not None
        url = digest.sign_link(settings, "allow", "m1", "alice@corp.example")
        assert url.startswith("https://portal.example/s/")
        claim = digest.read_link(settings, url.rsplit("/", 1)[1], 30)
        assert claim == digest.LinkClaim("allow", "m1", "alice@corp.example")
        with pytest.raises(RuntimeError, match="no spam link key"):
            digest.link_secret(AwsSettings())
