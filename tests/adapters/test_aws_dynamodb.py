"""DynamoDB adapters on moto, with the key schemas of template.yaml."""

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_dynamodb import DynamoDirectory, DynamoStageLedger
from mailmoat.adapters.aws_dynamodb_isolation import DynamoIsolationStore
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.context import Verdict
from mailmoat.isolation import (
    DownloadRecord,
    IsolatedFile,
    PortalMessage,
    hash_token,
    issue_token,
    resolve,
)
from mailmoat.ports import MessageRecord, Recipient
from tests.conftest import use_aws_test_credentials

NOW = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)


def create_tables(ddb):
    """The tables of template.yaml (same keys, index and TTL attributes)."""
    ddb.create_table(TableName="directory", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                {"AttributeName": "sk", "KeyType": "RANGE"}])
    ddb.create_table(TableName="messages", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"},
                                           {"AttributeName": "state", "AttributeType": "S"},
                                           {"AttributeName": "received_at", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     GlobalSecondaryIndexes=[{
                         "IndexName": "by-state",
                         "KeySchema": [{"AttributeName": "state", "KeyType": "HASH"},
                                       {"AttributeName": "received_at", "KeyType": "RANGE"}],
                         "Projection": {"ProjectionType": "KEYS_ONLY"}}])
    for name, key in (("isolated", "token"), ("idempotency", "id")):
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": key, "KeyType": "HASH"}])


@pytest.fixture
def ddb(monkeypatch):
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client)
        yield boto3.resource("dynamodb", region_name="us-east-1")


def record(message_id="m1", state="accepted"):
    return MessageRecord(id=message_id, received_at=NOW, state=state, mail_from="a@example.com",
                         rcpt_to=["alice@corp.example"], client_ip="203.0.113.5", size=10)


def test_directory_tenants_domains_recipients_and_config(ddb):
    directory = DynamoDirectory("directory")
    assert directory.ensure_tenant("corp", ["Corp.Example."])
    assert not directory.ensure_tenant("corp", ["corp.example"])
    assert directory.tenant_for_domain("CORP.example") == "corp"
    directory.upsert_recipients([Recipient("Alice@corp.example", "corp", name="Alice"),
                                 Recipient("bob@corp.example", "corp")])
    assert directory.recipient("alice@CORP.example").name == "Alice"
    assert directory.recipient("carol@corp.example") is None
    assert directory.recipient("alice@elsewhere.example") is None
    directory.replace_recipients("corp", [Recipient("carol@corp.example", "corp")])
    assert [r.address for r in directory.recipients()] == ["carol@corp.example"]
    directory.put_tenant_config(TenantConfig(
        name="corp", domains=["corp.example"], language="en",
        delivery=DeliveryConfig(mode="ses", routing_domain="corp.onmicrosoft.com")))
    [config] = directory.tenant_configs()
    assert config.language == "en" and config.delivery.routing_domain == "corp.onmicrosoft.com"


def test_message_log_states_and_the_sparse_index(ddb):
    log = DynamoMessageLog("messages", retention_days=30)
    log.accept(record())
    log.accept(record())  # a re-delivered event does not reset the row
    log.update("m1", state="processing", attempts=1, timings={"scan": 1.5})
    got = log.get("m1")
    assert (got.state, got.attempts, got.timings, got.rcpt_to) == (
        "processing", 1, {"scan": 1.5}, ["alice@corp.example"])
    assert [r.id for r in log.unfinished()] == ["m1"]
    log.update("m1", state="delivered", report={"disposition": "deliver"}, error=None)
    assert log.get("m1").state == "delivered" and log.get("m1").report == {"disposition": "deliver"}
    assert log.unfinished() == []
    item = ddb.Table("messages").get_item(Key={"id": "m1"})["Item"]
    assert "state" not in item and item["expires_at"] > 0  # TTL set, out of the index
    with pytest.raises(ValueError):
        log.update("m1", bogus=1)


def test_delivery_claim_is_won_once(ddb):
    log, other = DynamoMessageLog("messages"), DynamoMessageLog("messages")
    assert log.claim_delivery("m1", "Alice@corp.example")
    assert not other.claim_delivery("m1", "alice@corp.example")  # a concurrent duplicate
    assert log.holds_claim("m1", "alice@corp.example")
    assert not other.holds_claim("m1", "alice@corp.example")
    assert log.delivery_outcome("m1", "alice@corp.example") is None
    log.finish_delivery("m1", "alice@corp.example", "delivered: ses:1")
    assert other.delivery_outcome("m1", "ALICE@corp.example") == "delivered: ses:1"
    assert not log.claim_delivery("m1", "alice@corp.example")
    assert log.get("m1#rcpt#alice@corp.example") is None  # claims are not messages


def test_a_released_claim_can_be_won_again(ddb):
    log = DynamoMessageLog("messages")
    assert log.claim_delivery("m1", "bob@corp.example")
    log.release_delivery("m1", "bob@corp.example")
    assert log.claim_delivery("m1", "bob@corp.example")


def test_stage_attempts_count_up(ddb):
    log = DynamoMessageLog("messages")
    log.accept(record())
    assert [log.begin_attempt("m1", "scan") for _ in range(3)] == [1, 2, 3]
    assert log.begin_attempt("m1", "rewrite") == 1


def test_stage_ledger_completes_once(ddb):
    ledger = DynamoStageLedger("idempotency")
    assert not ledger.is_complete("m1", "scan")
    assert ledger.complete("m1", "scan")
    assert ledger.is_complete("m1", "scan")
    assert not ledger.complete("m1", "scan")
    assert not ledger.is_complete("m1", "rewrite")


def isolated(path="2"):
    return IsolatedFile(message_id="m1", path=path, filename="a.zip", size=3, sha256="00",
                        declared_type="application/zip", detected_type="application/zip",
                        verdict=Verdict.ENCRYPTED, symbols=["ENCRYPTED_ARCHIVE"], action="isolate",
                        expires_at=NOW + timedelta(days=30), blob_key=f"isolated/m1/{path}")


def test_isolation_store_protocol(ddb):
    store = DynamoIsolationStore("isolated")
    store.save(PortalMessage(id="m1", tenant="corp", language="ja", from_header="x@example.com",
                             subject="s", date=None, mail_from="x@example.com",
                             route=[{"ip": "203.0.113.5"}], created_at=NOW,
                             expires_at=NOW + timedelta(days=30)), [isolated("10"), isolated("2")])
    assert [f.path for f in store.files("m1")] == ["2", "10"]
    assert store.files("m1")[0].verdict == Verdict.ENCRYPTED
    assert store.message("m1").route == [{"ip": "203.0.113.5"}]
    first = issue_token(store, "m1", "Alice@corp.example", NOW + timedelta(days=30))
    assert store.has_token("m1", "alice@corp.example")
    assert resolve(store, first, NOW).recipient == "alice@corp.example"
    second = issue_token(store, "m1", "alice@corp.example", NOW + timedelta(days=30))
    assert resolve(store, first, NOW) is None  # replaced
    assert resolve(store, second, NOW).message_id == "m1"
    assert resolve(store, second, NOW + timedelta(days=31)) is None  # expired
    assert store.access(hash_token("unknown"), NOW) is None
    store.record_download(DownloadRecord(NOW, "m1", "2", "original", "198.51.100.1", "alice@corp.example"))
    assert [d.kind for d in store.downloads("m1")] == ["original"]


def test_a_report_too_big_for_a_row_is_summarised(ddb):
    log = DynamoMessageLog("messages")
    log.accept(record())
    findings = [{"symbol": "X", "target": "message", "detail": "d" * 100}] * 5000
    log.update("m1", state="delivered", report={"disposition": "deliver", "findings": findings,
                                                "attachments": [{"path": "2", "verdict": "safe"}]})
    report = log.get("m1").report
    assert report["truncated"] and "findings" not in report
    assert report["attachments"] == [{"path": "2", "filename": None, "verdict": "safe", "action": None}]


def _ppap_round_trip(store):
    """The PPAP pairing methods of the IsolationStore port (mailmoat.ppap), on either store."""
    from mailmoat.ppap import OpenedFile, OpenedMember, PairableFile

    entry = PairableFile(tenant="corp", sender_domain="sender.example",
                         recipients=("alice@corp.example",), message_id="m1", path="2",
                         filename="a.zip", header_message_id="<a@sender.example>",
                         subject_key="quote", created_at=NOW,
                         expires_at=NOW + timedelta(minutes=30))
    store.add_pairable(entry)
    assert store.pairable("corp", "sender.example", NOW) == [entry]
    assert store.pairable("corp", "other.example", NOW) == []
    assert store.pairable("other", "sender.example", NOW) == []
    assert store.pairable("corp", "sender.example", NOW + timedelta(minutes=31)) == []
    assert store.opened("m1", "2") is None
    opened = OpenedFile(message_id="m1", path="2", by_message="m2", at=NOW, archive=True,
                        members=[OpenedMember(0, "見積.txt", 5, Verdict.SAFE, [], "k0"),
                                 OpenedMember(1, "x.exe", 9, Verdict.DANGER, ["VIRUS"], None)])
    store.set_opened(opened, NOW + timedelta(days=30))
    assert store.opened("m1", "2") == opened
    assert store.opened("m1", "3") is None


def test_ppap_pairing_records_on_dynamodb(ddb):
    _ppap_round_trip(DynamoIsolationStore("isolated"))


def test_ppap_pairing_records_on_sqlite(tmp_path):
    from mailmoat.adapters.sqlite import SqliteDatabase
    from mailmoat.adapters.sqlite_isolation import SqliteIsolationStore

    store = SqliteIsolationStore(SqliteDatabase(tmp_path / "db.sqlite3"))
    _ppap_round_trip(store)
    store.delete_expired(NOW + timedelta(days=31))
    assert store.opened("m1", "2") is None


def _sandbox_round_trip(store):
    """The sandbox flow's methods of the IsolationStore port (mailmoat.sandbox_verdicts)."""
    from dataclasses import replace

    message = PortalMessage(id="m1", tenant="corp", language="ja", from_header=None, subject="s",
                            date=None, mail_from=None, route=[], created_at=NOW,
                            expires_at=NOW + timedelta(days=30))
    waiting = replace(isolated("3"), verdict=Verdict.ANALYSING, symbols=["SANDBOX_ANALYSING"],
                      sandbox_ticket="42", sandbox_submitted_at=NOW)
    store.save(message, [isolated("2"), waiting])
    assert store.analysing() == [waiting]
    assert store.files("m1")[1].sandbox_submitted_at == NOW
    decided = replace(waiting, verdict=Verdict.SAFE, symbols=["SANDBOX_CLEAN"], sandbox_ticket=None)
    store.update_file(decided)
    assert store.analysing() == []
    assert store.files("m1") == [isolated("2"), decided]


def test_sandbox_records_on_dynamodb(ddb):
    _sandbox_round_trip(DynamoIsolationStore("isolated"))


def test_sandbox_records_on_sqlite_and_an_old_database_gets_the_columns(tmp_path):
    import sqlite3

    from mailmoat.adapters.sqlite import SqliteDatabase
    from mailmoat.adapters.sqlite_isolation import SqliteIsolationStore

    path = tmp_path / "db.sqlite3"
    old = sqlite3.connect(path)  # the isolated_files table as it was before the sandbox flow
    old.execute("CREATE TABLE isolated_files (message_id TEXT NOT NULL, path TEXT NOT NULL,"
                " filename TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
                " declared_type TEXT NOT NULL, detected_type TEXT, verdict TEXT NOT NULL,"
                " symbols TEXT NOT NULL DEFAULT '[]', members TEXT NOT NULL DEFAULT '[]',"
                " action TEXT NOT NULL, blob_key TEXT, expires_at TEXT NOT NULL,"
                " PRIMARY KEY (message_id, path))")
    old.execute("INSERT INTO isolated_files VALUES ('m0','2','a','1','00','x/y',NULL,'safe','[]',"
                "'[]','isolate',NULL,'2030-01-01T00:00:00+00:00')")
    old.commit()
    old.close()
    store = SqliteIsolationStore(SqliteDatabase(path))
    assert store.files("m0")[0].sandbox_ticket is None
    _sandbox_round_trip(store)
    SqliteIsolationStore(SqliteDatabase(path))  # opening again: the migration is a no-op
