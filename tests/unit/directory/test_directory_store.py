"""The directory adapters hold aliases, sources and sync state: SQLite for real, DynamoDB on moto."""

from __future__ import annotations

import sqlite3

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.sqlite import SqliteDatabase, SqliteDirectory
from mailmoat.ports import Recipient
from tests.adapters.test_aws_dynamodb import create_tables
from tests.conftest import use_aws_test_credentials


@pytest.fixture
def dynamo(monkeypatch):
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        create_tables(boto3.client("dynamodb", region_name="us-east-1"))
        yield DynamoDirectory("directory")


@pytest.fixture
def sqlite(tmp_path):
    return SqliteDirectory(SqliteDatabase(tmp_path / "d.sqlite3"))


@pytest.fixture(params=["sqlite", "dynamo"])
def directory(request):
    d = request.getfixturevalue(request.param)
    d.ensure_tenant("corp", ["corp.example"])
    d.ensure_tenant("other", ["other.example"])
    return d


def test_an_alias_reaches_its_recipient_and_goes_with_it(directory) -> None:
    directory.upsert_recipients([
        Recipient("sales@corp.example", "corp", kind="group", aliases=["Vertrieb@corp.example", "eigyo@corp.example"],
                  source="m365", external_id="g1", spam_filter=False),
        Recipient("bob@corp.example", "corp")])
    found = directory.recipient("VERTRIEB@corp.example")
    assert (found.address, found.kind, found.spam_filter, found.source, found.external_id) == (
        "sales@corp.example", "group", False, "m365", "g1")
    assert found.aliases == ["eigyo@corp.example", "vertrieb@corp.example"]
    # A changed alias list: the dropped alias no longer reaches anyone.
    directory.upsert_recipients([Recipient("sales@corp.example", "corp", kind="group",
                                           aliases=["eigyo@corp.example"], source="m365", external_id="g1")])
    assert directory.recipient("vertrieb@corp.example") is None
    assert directory.recipient("eigyo@corp.example").address == "sales@corp.example"
    assert [r.address for r in directory.recipients("corp")] == ["bob@corp.example", "sales@corp.example"]
    directory.remove_recipients("corp", ["sales@corp.example"])
    assert directory.recipient("eigyo@corp.example") is None
    assert [r.address for r in directory.recipients()] == ["bob@corp.example"]


def test_remove_recipients_touches_only_that_tenant(directory) -> None:
    directory.upsert_recipients([Recipient("a@corp.example", "corp"), Recipient("b@other.example", "other")])
    directory.remove_recipients("corp", ["b@other.example", "a@corp.example", "nobody@corp.example"])
    assert [r.address for r in directory.recipients()] == ["b@other.example"]


def test_replace_recipients_drops_old_aliases(directory) -> None:
    directory.upsert_recipients([Recipient("a@corp.example", "corp", aliases=["x@corp.example"])])
    directory.replace_recipients("corp", [Recipient("c@corp.example", "corp", aliases=["y@corp.example"])])
    assert directory.recipient("x@corp.example") is None
    assert directory.recipient("y@corp.example").address == "c@corp.example"


def test_sync_state_is_per_tenant_and_provider(directory) -> None:
    assert directory.sync_state("corp", "m365") == {}
    directory.set_sync_state("corp", "m365", {"users_delta_link": "https://graph/…?$deltatoken=1"})
    directory.set_sync_state("corp", "m365", {"users_delta_link": "https://graph/…?$deltatoken=2"})
    assert directory.sync_state("corp", "m365") == {"users_delta_link": "https://graph/…?$deltatoken=2"}
    assert directory.sync_state("corp", "google") == {} and directory.sync_state("other", "m365") == {}
    assert directory.recipients("corp") == []  # the state row is not a recipient


def test_a_database_from_before_aliases_keeps_working(tmp_path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript("""
            CREATE TABLE tenants (name TEXT PRIMARY KEY);
            CREATE TABLE tenant_domains (domain TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name));
            CREATE TABLE recipients (address TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name),
              name TEXT NOT NULL DEFAULT '', organisation TEXT NOT NULL DEFAULT '',
              department TEXT NOT NULL DEFAULT '', title TEXT NOT NULL DEFAULT '',
              memo TEXT NOT NULL DEFAULT '', spam_filter INTEGER NOT NULL DEFAULT 1,
              kind TEXT NOT NULL DEFAULT 'user');
            INSERT INTO tenants VALUES ('corp');
            INSERT INTO tenant_domains VALUES ('corp.example', 'corp');
            INSERT INTO recipients(address, tenant, name, spam_filter) VALUES ('alice@corp.example', 'corp', 'Alice', 0);
        """)
    directory = SqliteDirectory(SqliteDatabase(path))
    alice = directory.recipient("alice@corp.example")
    assert (alice.name, alice.spam_filter, alice.source, alice.aliases) == ("Alice", False, "manual", [])
    directory.upsert_recipients([Recipient("alice@corp.example", "corp", aliases=["a@corp.example"])])
    assert directory.recipient("a@corp.example").address == "alice@corp.example"


def test_a_sync_runs_against_dynamodb_as_on_aws(dynamo) -> None:
    import responses

    from mailmoat.directory.sync import sync_tenant
    from tests.unit.directory.helpers import m365_tenant, no_sleep, play, secrets

    tenant = m365_tenant(max_delete_share=0.5)
    dynamo.put_tenant_config(tenant)
    read = secrets(CORP_GRAPH_SECRET="recorded-client-secret")
    for cassette in ("m365-full.json", "m365-delta.json"):
        with responses.RequestsMock() as rsps:
            play(rsps, cassette)
            assert sync_tenant(dynamo, tenant, read_secret=read, sleep=no_sleep).applied
    assert dynamo.recipient("bobby@corp.example").address == "bob@corp.example"
    assert dynamo.recipient("carol@corp.example") is None
    assert dynamo.sync_state("corp", "m365")["groups_delta_link"].endswith("gRoUpSdElTa2")
    assert len(dynamo.recipients("corp")) == 7
    assert [c.directory.provider for c in dynamo.tenant_configs()] == ["m365"]  # config round trip
