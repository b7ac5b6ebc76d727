"""The console's AWS side on moto: trace search on the DynamoDB message log, isolated-file listing
and link revocation on the isolation table, and policy saved into the directory table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_isolation import DynamoIsolationStore
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.admin.policy import DirectoryPolicyStore, with_policy
from mailmoat.config import TenantConfig
from mailmoat.context import Verdict
from mailmoat.isolation import IsolatedFile, PortalMessage, issue_token, resolve
from mailmoat.ports import MessageRecord, TraceQuery
from tests.adapters.test_aws_dynamodb import create_tables
from tests.conftest import use_aws_test_credentials

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def ddb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client)
        yield client


def test_dynamo_trace_search(ddb: Any) -> None:
    logbook = DynamoMessageLog("messages")
    rows = [("m1", 0, "a.test", "請求書 100%", "delivered", "deliver", ["safe"], []),
            ("m2", 60, "a.test", "meeting", "held", "held", [], ["STAGE_FAILED"]),
            ("m3", 120, "a.test", "zip", "delivered", "deliver", ["encrypted"], ["SPF_FAIL"]),
            ("b1", 30, "b.test", "請求書 other", "delivered", "deliver", [], [])]
    for id_, minutes, tenant, subject, state, disposition, verdicts, symbols in rows:
        logbook.accept(MessageRecord(id=id_, received_at=T0 + timedelta(minutes=minutes), state="accepted",
                                     mail_from="s@sender.example", rcpt_to=[f"alice@{tenant}"], tenant=tenant))
        logbook.update(id_, state=state, disposition=disposition, subject=subject, report={
            "attachments": [{"verdict": v, "symbols": []} for v in verdicts],
            "findings": [{"symbol": s} for s in symbols]})
    assert logbook.claim_delivery("m1", "alice@a.test")  # claim rows are never search results

    def ids(**criteria: Any) -> list[str]:
        return [r.id for r in logbook.search(TraceQuery(**criteria))]

    assert ids(tenant="a.test") == ["m3", "m2", "m1"]
    assert ids(tenant="b.test") == ["b1"]
    assert ids(subject="請求書") == ["b1", "m1"]
    assert ids(tenant="a.test", subject="0%") == ["m1"]
    assert ids(tenant="a.test", state="held") == ["m2"]
    assert ids(disposition="held") == ["m2"]
    assert ids(tenant="a.test", verdict="encrypted") == ["m3"]
    assert ids(symbol="STAGE_FAILED") == ["m2"]
    assert ids(recipient="ALICE@b.test") == ["b1"]
    assert ids(since=T0 + timedelta(minutes=30), until=T0 + timedelta(minutes=120)) == ["m2", "b1"]
    assert ids(tenant="a.test", limit=2, offset=1) == ["m2", "m1"]


def test_dynamo_isolation_listing_and_revocation(ddb: Any) -> None:
    store = DynamoIsolationStore("isolated")
    expires = T0 + timedelta(days=30)
    for id_, tenant in (("m1", "a.test"), ("m2", "a.test"), ("b1", "b.test")):
        store.save(PortalMessage(id=id_, tenant=tenant, language="ja", from_header="S <s@s.example>",
                                 subject=f"subject {id_}", date=None, mail_from="s@s.example", route=[],
                                 created_at=T0 + timedelta(minutes=len(id_) + int(id_[-1])),
                                 expires_at=expires),
                   [IsolatedFile(message_id=id_, path="2", filename="a.zip", size=3, sha256="0" * 64,
                                 declared_type="application/zip", detected_type="application/zip",
                                 verdict=Verdict.ENCRYPTED, symbols=["ENCRYPTED_ARCHIVE"], action="isolate",
                                 expires_at=expires, blob_key="isolated/x/2")])
    assert [m.id for m in store.tenant_messages("a.test")] == ["m2", "m1"]
    assert [m.id for m in store.tenant_messages("b.test")] == ["b1"]
    assert [m.id for m in store.tenant_messages("a.test", limit=1, offset=1)] == ["m1"]
    alice = issue_token(store, "m1", "alice@a.test", expires)
    issue_token(store, "m1", "bob@a.test", expires)
    assert [link.recipient for link in store.links("m1")] == ["alice@a.test", "bob@a.test"]
    assert resolve(store, alice, T0) is not None
    assert store.revoke("m1", "ALICE@a.test")
    assert resolve(store, alice, T0) is None
    assert [link.recipient for link in store.links("m1")] == ["bob@a.test"]
    assert not store.revoke("m1", "alice@a.test")  # already revoked
    assert not store.revoke("m1", "nobody@a.test")


def test_policy_saved_on_aws_is_the_directory_row(ddb: Any) -> None:
    directory = DynamoDirectory("directory")
    tenant = TenantConfig(name="a.test", domains=["a.test"])
    directory.put_tenant_config(tenant)
    store = DirectoryPolicyStore(directory)
    store.save(with_policy(tenant, {"isolation": "all", "blocked_senders": ["@bad.example"]}), "ops")
    saved = {t.name: t for t in directory.tenant_configs()}["a.test"]
    assert saved.isolation == "all" and saved.blocked_senders == ["@bad.example"]
    assert saved.domains == ["a.test"]
    assert store.overrides() == {}


def test_audit_trail_on_aws_is_per_tenant_newest_first(ddb: Any) -> None:
    from mailmoat.adapters.aws_admin import DynamoAuditLog
    from mailmoat.admin.audit import AuditEntry

    trail = DynamoAuditLog(boto3.resource("dynamodb").Table("directory"))
    for i in range(5):
        trail.record(AuditEntry(at=T0 + timedelta(minutes=i), admin="admin@a.test", tenant="a.test",
                                action=f"action.{i}", target="t", client_ip="192.0.2.1"))
    trail.record(AuditEntry(at=T0, admin="admin@b.test", tenant="b.test", action="login"))
    assert [e.action for e in trail.entries("a.test", limit=3)] == ["action.4", "action.3", "action.2"]
    assert [e.action for e in trail.entries("a.test", limit=3, offset=3)] == ["action.1", "action.0"]
    assert [e.action for e in trail.entries("b.test")] == ["login"]
    assert trail.entries(None) == []
    assert trail.entries("a.test")[0].at == T0 + timedelta(minutes=4)
