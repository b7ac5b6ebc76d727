"""Spam quarantine and delivery status notices on the AWS stack, on moto through the real handlers.

A message SES marked as spam, for a tenant that quarantines spam, is held per recipient by the
deliver stage (copy in the raw bucket under spamq/, row in the spam table), listed in the digest
the scheduled function sends (SES, as the relay identity), and released through the portal's
signed link, once. A recipient the mailbox host refuses for good gets the sender a DSN, sent
through SES as postmaster@ the relay domain, unmodified by the forwarder rewriting."""

from __future__ import annotations

import email
import importlib.util
from email import policy
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.adapters.aws_dynamodb_spam import DynamoSpamStore
from mailmoat.bootstrap import aws as entry
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.ports import DeliveryError
from tests.e2e.test_aws_pipeline import (  # noqa: F401  (stack is a fixture)
    RAW_BUCKET,
    REGION,
    ROOT,
    FakeContext,
    Stack,
    incoming,
    run_all,
    sent_messages,
    stack,
    template_resources,
)
from tests.webforms import form_csrf

ALICE = "alice@corp.example"


@pytest.fixture
def spam_stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:  # noqa: F811 (the fixture)
    props = template_resources()["SpamQuarantineTable"]["Properties"]
    ddb = boto3.client("dynamodb", region_name=REGION)
    ddb.create_table(TableName="spam", BillingMode=props["BillingMode"],
                     AttributeDefinitions=props["AttributeDefinitions"], KeySchema=props["KeySchema"])
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="spam-link", SecretString="L" * 64)["ARN"]
    monkeypatch.setenv("MAILMOAT_SPAM_TABLE", "spam")
    monkeypatch.setenv("MAILMOAT_SPAM_LINK_SECRET_ARN", secret)
    DynamoDirectory("directory").put_tenant_config(TenantConfig(  # type: ignore[call-arg]
        name="corp", domains=["corp.example"], language="en", spam_action="quarantine",
        delivery=DeliveryConfig(mode="ses", routing_domain="corp.onmicrosoft.com")))
    entry.aws_runtime.cache_clear()
    return stack


def spam(message_id: str) -> bytes:
    # SES writes its verdict above everything the sender wrote; the first one is SES's.
    return b"X-SES-Spam-Verdict: FAIL\r\nX-SES-Virus-Verdict: PASS\r\n" + incoming(subject="Cheap watches")


def portal() -> TestClient:
    """The portal as web/app.py builds it on Lambda (bootstrap() from the environment)."""
    from mailmoat.bootstrap import bootstrap
    from mailmoat_web.app import create_app

    return TestClient(create_app(bootstrap(), sweep_every=None), base_url="https://portal.example.net")


def test_spam_is_held_per_recipient_then_released_once_through_the_portal(spam_stack: Stack) -> None:
    spam_stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-spam-0001", Body=spam("ses-spam-0001"))
    run_all(spam_stack)

    assert sent_messages() == []  # held, not delivered
    held = DynamoSpamStore("spam").get("ses-spam-0001", ALICE)
    assert held is not None and held.state == "held" and held.blob_key == f"spamq/ses-spam-0001/{ALICE}"
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName="spam", Key={"pk": {"S": f"HELD#ses-spam-0001#{ALICE}"}})["Item"]
    assert int(item["expires"]["N"]) > 0  # the TTL attribute the table is configured with
    copy = spam_stack.s3.get_object(Bucket=RAW_BUCKET, Key=held.blob_key)["Body"].read()
    assert b"Cheap watches" in copy
    record = DynamoMessageLog("messages").get("ses-spam-0001")
    assert record is not None and record.state == "quarantined"

    from mailmoat.spam.digest import sign_link

    link = sign_link(entry.aws_runtime().runtime.services.settings, "release", "ses-spam-0001", ALICE)
    path = link.removeprefix("https://portal.example.net")
    client = portal()
    page = client.get(path)
    assert page.status_code == 200 and "Cheap watches" in page.text
    released = client.post(path, data={"csrf": form_csrf(page.text)})
    assert released.status_code == 200
    [sent] = sent_messages()
    assert sent.destinations[0] == "alice@corp.onmicrosoft.com"
    assert sent.source == "relay@relay.example.net"
    assert DynamoSpamStore("spam").get("ses-spam-0001", ALICE).state == "released"  # type: ignore[union-attr]
    record = DynamoMessageLog("messages").get("ses-spam-0001")
    assert record is not None and record.state == "delivered"
    assert "released from spam quarantine" in str(record.report["deliveries"][ALICE])
    again = client.post(path, data={"csrf": form_csrf(page.text)})  # a second click, another tab
    assert again.status_code == 200 and len(sent_messages()) == 1


def test_the_digest_function_mails_what_was_held(spam_stack: Stack) -> None:
    spam_stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-spam-0002", Body=spam("ses-spam-0002"))
    run_all(spam_stack)
    assert sent_messages() == []
    path = ROOT / "functions" / "spam_digest" / "app.py"
    spec = importlib.util.spec_from_file_location("app_spam_digest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.handler({"source": "aws.events"}, FakeContext())
    [digest] = sent_messages()  # sent without a delivery claim: it is not a message of the log
    assert digest.destinations[0] == "alice@corp.onmicrosoft.com"
    body = email.message_from_string(digest.raw_data, policy=policy.default)
    text = "\n".join(p.get_content() for p in body.walk() if p.get_content_type() == "text/plain")
    assert "Cheap watches" in text and "https://portal.example.net/s/" in text
    assert DynamoSpamStore("spam").get("ses-spam-0002", ALICE).digested_at is not None  # type: ignore[union-attr]


class RefusingMailbox:
    """The tenant's mailbox host answering 550 for the recipient (what SMTP delivery reports)."""

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        raise DeliveryError("550 5.1.1 mailbox unavailable", permanent=True, code=550)


def test_a_refused_recipient_gets_the_authenticated_sender_a_dsn_through_ses(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 (the fixture)
    zone = stack_zone(monkeypatch)
    assert zone.exists()
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-bounce-0001", Body=incoming(subject="Invoice"))
    for stage in ("authenticate", "scan", "isolate", "rewrite"):
        stack.drain(stage)
    handler = stack.handler("deliver")
    runtime = entry.aws_runtime().runtime
    runtime.services.mailer_for = lambda _tenant: RefusingMailbox()
    received = stack.sqs.receive_message(QueueUrl=stack.queues["deliver"], MaxNumberOfMessages=10,
                                         VisibilityTimeout=0)["Messages"]
    handler({"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                          "body": m["Body"], "attributes": {}, "messageAttributes": {},
                          "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                          "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:deliver",
                          "awsRegion": REGION} for m in received]}, FakeContext())
    [dsn] = sent_messages()
    assert dsn.source == "postmaster@relay.example.net"
    assert dsn.destinations[0] == "billing@example.org"  # the envelope sender
    report = email.message_from_string(dsn.raw_data, policy=policy.default)
    assert report.get_content_type() == "multipart/report"
    assert "postmaster@relay.example.net" in str(report["From"])
    assert report["Reply-To"] is None and report["X-Original-From"] is None  # no forwarder rewrite
    record = DynamoMessageLog("messages").get("ses-bounce-0001")
    assert record is not None and record.state == "failed"
    assert any(f["symbol"] == "DSN_SENT" for f in record.report["findings"])


def stack_zone(monkeypatch: pytest.MonkeyPatch) -> Any:
    """example.org publishes an SPF record that passes the sending IP, so the sender is
    authenticated and may be told (forged senders get no backscatter)."""
    import json
    import tempfile
    from pathlib import Path

    zone = {"example.org": {"TXT": ["v=spf1 ip4:203.0.113.5 -all"]}}
    path = Path(tempfile.mkdtemp()) / "zone.json"
    path.write_text(json.dumps(zone))
    monkeypatch.setenv("MAILMOAT_DNS_ZONE", str(path))
    entry.aws_runtime.cache_clear()
    return path
