"""The DynamoDB calls PPAP pairing makes (mailmoat.ppap through DynamoIsolationStore) are ones
the template grants: moto allows any call, AWS allows only the role's actions on the table's ARN.
The calls are recorded from botocore on moto, then checked against the roles in template.yaml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.template.test_template import allows, load_template, role_statements

from mailmoat.adapters.aws_dynamodb_isolation import DynamoIsolationStore
from mailmoat.context import Verdict
from mailmoat.ppap import OpenedFile, OpenedMember, PairableFile

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def recorded(isolated_table: None) -> tuple[DynamoIsolationStore, list[str]]:
    store = DynamoIsolationStore("isolated")
    calls: list[str] = []
    store.table.meta.client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    return store, calls


def _operations(store: DynamoIsolationStore, calls: list[str], *steps: str) -> set[str]:
    entry = PairableFile(tenant="corp", sender_domain="sender.example", recipients=("a@corp.example",),
                         message_id="m1", path="2", filename="a.zip", header_message_id=None,
                         subject_key="quote", created_at=NOW, expires_at=NOW + timedelta(minutes=30))
    opened = OpenedFile(message_id="m1", path="2", by_message="m2", at=NOW, archive=True,
                        members=[OpenedMember(0, "a.txt", 1, Verdict.SAFE, [], "k")])
    run = {"add_pairable": lambda: store.add_pairable(entry),
           "pairable": lambda: store.pairable("corp", "sender.example", NOW),
           "set_opened": lambda: store.set_opened(opened, NOW + timedelta(days=30)),
           "opened": lambda: store.opened("m1", "2")}
    for step in run:  # every item exists, whichever steps are recorded
        run[step]()
    calls.clear()
    for step in steps:
        run[step]()
    return {f"dynamodb:{name}" for name in calls}


def test_the_isolate_function_may_make_every_pairing_call(recorded) -> None:  # type: ignore[no-untyped-def]
    store, calls = recorded
    used = _operations(store, calls, "add_pairable", "pairable", "set_opened", "opened")
    assert used == {"dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:PutItem"}
    statements = role_statements(load_template(), "IsolateFunction")
    assert all(allows(statements, action, "IsolatedFilesTable") for action in used), used


def test_the_portal_function_may_read_what_opened(recorded) -> None:  # type: ignore[no-untyped-def]
    store, calls = recorded
    used = _operations(store, calls, "opened")
    assert used == {"dynamodb:GetItem"}
    statements = role_statements(load_template(), "PortalFunction")
    assert allows(statements, "dynamodb:GetItem", "IsolatedFilesTable")
