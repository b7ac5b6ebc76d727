"""DynamoKeepMailStore on moto, against the keep-mail store port's promises (what the SQLite store
does): copies by recipient and time, expiry, credentials, one-time codes with counted attempts,
sessions that end at their expiry even before DynamoDB's TTL runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_dynamodb_keepmail import DynamoKeepMailStore
from mailmoat.keepmail import KeptMessage, OneTimeCode
from tests.conftest import use_aws_test_credentials

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
ALICE = "alice@corp.example"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoKeepMailStore]:
    use_aws_test_credentials(monkeypatch)
    from cfnlint.decode import cfn_yaml

    from tests.e2e.test_aws_pipeline import ROOT

    props: Any = cfn_yaml.load(str(ROOT / "template.yaml"))["Resources"]["KeepMailTable"]["Properties"]
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="keep", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[dict(a) for a in props["AttributeDefinitions"]],
            KeySchema=[dict(k) for k in props["KeySchema"]])
        yield DynamoKeepMailStore("keep")


def kept(message_id: str, minutes: int, recipient: str = ALICE, days: int = 7) -> KeptMessage:
    received = T0 + timedelta(minutes=minutes)
    return KeptMessage(message_id=message_id, recipient=recipient, tenant="corp", received_at=received,
                       from_header="S <s@s.example>", subject=f"subject {message_id}",
                       outcome="delivered: ses:1", blob_key=f"keep/{recipient}/{message_id}",
                       kept_until=received + timedelta(days=days))


def test_copies_by_recipient_newest_first_and_expiry(store: DynamoKeepMailStore) -> None:
    for message_id, minutes in (("m1", 0), ("m2", 30), ("m3", 60)):
        store.put(kept(message_id, minutes))
    store.put(kept("b1", 10, recipient="bob@corp.example"))
    store.put(kept("old", -3 * 24 * 60, days=1))
    assert store.get("m2", ALICE) == kept("m2", 30)
    assert store.get("m2", "bob@corp.example") is None  # another recipient's copy is not found
    assert [k.message_id for k in store.messages(ALICE, T0 - timedelta(minutes=1))] == ["m3", "m2", "m1"]
    assert [k.message_id for k in store.messages(ALICE, T0 + timedelta(minutes=30), limit=1)] == ["m3"]
    assert [k.message_id for k in store.expired(T0)] == ["old"]
    refused = dataclasses.replace(kept("m1", 0), outcome="failed: 550 5.1.1")
    store.put(refused)  # a re-run replaces the row with the final outcome
    assert store.get("m1", ALICE) == refused
    store.delete("old", ALICE)
    assert store.get("old", ALICE) is None and store.expired(T0) == []


def test_credentials_codes_failures_and_sessions(store: DynamoKeepMailStore) -> None:
    assert store.password_hash(ALICE) is None and store.alternate(ALICE) is None
    store.set_password(ALICE, "$argon2id$hash")
    store.set_alternate(ALICE, "alice.home@alt.example")
    assert (store.password_hash(ALICE), store.alternate(ALICE)) == ("$argon2id$hash", "alice.home@alt.example")
    store.set_password(ALICE, None)
    assert store.password_hash(ALICE) is None and store.alternate(ALICE) == "alice.home@alt.example"

    store.set_code(ALICE, OneTimeCode("$argon2id$code", T0 + timedelta(minutes=10), 0, T0))
    store.count_code_attempt(ALICE)
    store.count_code_attempt(ALICE)
    assert store.code(ALICE) == OneTimeCode("$argon2id$code", T0 + timedelta(minutes=10), 2, T0)
    store.set_code(ALICE, None)
    assert store.code(ALICE) is None
    store.count_code_attempt(ALICE)  # no code: nothing to count, and no row appears
    assert store.code(ALICE) is None

    store.add_session("a" * 64, ALICE, T0 + timedelta(hours=1))
    assert store.session("a" * 64, T0) == ALICE
    assert store.session("a" * 64, T0 + timedelta(hours=1)) is None  # expired, whatever TTL did
    assert store.session("b" * 64, T0) is None
    store.end_session("a" * 64)
    assert store.session("a" * 64, T0) is None
    store.purge(T0)  # TTLs do the purging; the call is harmless
