"""The sandbox poll function (functions/sandbox_poll/app.py) on moto with CAPE on loopback
(tests/adapters/test_cape.py's fixture server): the files isolated as `analysing` are decided
(clean → downloadable and, with sandbox_release_clean, mailed; malicious → the quarantined bytes
deleted and the deletion notice sent), a second run changes nothing, and a run stops starting
files once its time budget is spent. The AWS calls the run makes are recorded for the role's
check (tests/template/test_sandbox_poll_template.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_isolation import DynamoIsolationStore
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.context import Verdict
from mailmoat.isolation import IsolatedFile, PortalMessage
from tests.adapters.test_cape import (  # noqa: F401  (cape is a fixture)
    CREATE,
    Answer,
    FakeCape,
    cape,
)
from tests.e2e.test_aws_pipeline import (  # noqa: F401  (stack is a fixture)
    QUARANTINE_BUCKET,
    FakeContext,
    Stack,
    sent_messages,
    stack,
)

BYTES = {"42": b"MZ clean enough", "43": b"MZ very bad payload"}


@dataclass
class Budget(FakeContext):
    seconds: float = 900.0

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def analysing(aws: Stack, ticket: str, report: str, server: FakeCape) -> str:
    """A message with one file waiting for CAPE task `ticket`, whose report is `report`."""
    now = datetime.now(UTC)
    message_id, data = f"m-{ticket}", BYTES[ticket]
    key = f"isolated/{message_id}/2"
    aws.s3.put_object(Bucket=QUARANTINE_BUCKET, Key=key, Body=data)  # type: ignore[attr-defined]
    store = DynamoIsolationStore("isolated")
    store.save(PortalMessage(id=message_id, tenant="corp", language="en", from_header="x@example.org",
                             subject="Invoice", date=None, mail_from=None, route=[], created_at=now,
                             expires_at=now + timedelta(days=30)),
               [IsolatedFile(message_id=message_id, path="2", filename="invoice.exe",
                             size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                             declared_type="application/octet-stream",
                             detected_type="application/x-dosexec", verdict=Verdict.ANALYSING,
                             symbols=["SANDBOX_ANALYSING"], action="isolate",
                             expires_at=now + timedelta(days=30), blob_key=key,
                             sandbox_ticket=ticket, sandbox_submitted_at=now)])
    store.set_token(message_id, "alice@corp.example", hashlib.sha256(ticket.encode()).hexdigest(),
                    now + timedelta(days=30))
    server.answer(f"/apiv2/tasks/view/{ticket}/", Answer(fixture="view-reported.json"))
    server.answer(f"/apiv2/tasks/get/report/{ticket}/", Answer(fixture=report))
    return key


def poll(aws: Stack, server: FakeCape, context: FakeContext | None = None,
         calls: list[str] | None = None) -> dict[str, Any]:
    # The function's environment: the globals (no ARC key: only RewriteFunction's names it).
    aws.monkeypatch.delenv("MAILMOAT_ARC_KEY_SECRET_ARN", raising=False)
    aws.monkeypatch.setenv("MAILMOAT_CAPE_URL", server.url)
    aws.monkeypatch.setenv("MAILMOAT_CAPE_TIMEOUT_SECONDS", "2")
    aws.monkeypatch.setenv("MAILMOAT_CAPE_RETRIES", "0")
    handler = aws.handler("sandbox_poll")
    if calls is not None:  # every client the runtime makes comes from the default session
        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register(  # type: ignore[union-attr]
            "before-call.*.*", lambda model, **_: calls.append(
                f"{model.service_model.service_name}:{model.name}"))
    result: dict[str, Any] = handler({"source": "aws.events"}, context or Budget())
    return result


def two_files(aws: Stack, server: FakeCape) -> tuple[str, str]:
    DynamoDirectory("directory").put_tenant_config(TenantConfig(  # type: ignore[call-arg]
        name="corp", domains=["corp.example"], language="en", sandbox_release_clean=True,
        delivery=DeliveryConfig(mode="ses", routing_domain="corp.onmicrosoft.com")))
    return (analysing(aws, "42", "report-clean.json", server),
            analysing(aws, "43", "report-malicious.json", server))


def test_the_sandbox_poll_function_decides_the_analysing_files(
        stack: Stack, cape: FakeCape) -> None:  # noqa: F811
    clean_key, bad_key = two_files(stack, cape)
    assert poll(stack, cape) == {"sandbox": True, "clean": 1, "danger": 1, "timed_out": 0,
                                 "waiting": 0, "errors": 0, "mailed": 2, "mail_failed": 0}
    store = DynamoIsolationStore("isolated")
    [clean] = store.files("m-42")
    assert clean.verdict == Verdict.SAFE and clean.sandbox_ticket is None
    assert "SANDBOX_CLEAN" in clean.symbols and clean.blob_key == clean_key  # downloadable
    [bad] = store.files("m-43")
    assert bad.verdict == Verdict.DANGER and bad.blob_key is None
    assert "SANDBOX_MALICIOUS" in bad.symbols
    listed = stack.s3.list_objects_v2(Bucket=QUARANTINE_BUCKET).get("Contents", [])  # type: ignore[attr-defined]
    assert [o["Key"] for o in listed] == [clean_key]  # the malicious bytes are gone
    assert bad_key not in [o["Key"] for o in listed]
    subjects = sorted(m.raw_data.split("Subject: ", 1)[1].split("\n", 1)[0].strip()
                      for m in sent_messages())
    assert subjects == ["[Attachment deleted] Invoice", "[Attachment delivered] Invoice"]
    assert {m.destinations[0] for m in sent_messages()} == {"alice@corp.onmicrosoft.com"}
    assert cape.hits(CREATE) == 0  # the poller only asks; it never submits
    asked = len(cape.requests)
    assert poll(stack, cape)["clean"] == 0 and store.analysing() == []  # decided: not asked again
    assert len(cape.requests) == asked


def test_a_run_starts_no_file_once_its_time_budget_is_spent(stack: Stack, cape: FakeCape) -> None:  # noqa: F811
    two_files(stack, cape)
    # 5 s left, one file's worst case (2 requests × 2 s + 0.5 s backoff): the oldest file only.
    first = poll(stack, cape, Budget(seconds=5.0))
    assert (first["clean"], first["danger"]) == (1, 0)
    assert [f.message_id for f in DynamoIsolationStore("isolated").analysing()] == ["m-43"]
    second = poll(stack, cape, Budget(seconds=5.0))
    assert (second["clean"], second["danger"]) == (0, 1)


def test_without_cape_it_returns_at_once(stack: Stack) -> None:  # noqa: F811
    stack.monkeypatch.delenv("MAILMOAT_CAPE_URL", raising=False)
    calls: list[str] = []
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register(  # type: ignore[union-attr]
        "before-call.*.*", lambda model, **_: calls.append(model.name))
    assert stack.handler("sandbox_poll")({"source": "aws.events"}, Budget()) == {"sandbox": False}
    assert calls == []  # not even the table is read


@pytest.fixture
def recorded_calls(stack: Stack, cape: FakeCape) -> list[str]:  # noqa: F811
    """The AWS operations one poll that decides a clean (released) and a malicious file makes."""
    two_files(stack, cape)
    calls: list[str] = []
    result = poll(stack, cape, calls=calls)
    assert (result["clean"], result["danger"], result["mailed"]) == (1, 1, 2)
    return calls
