"""The AWS stack end to end on moto: SES's S3 object → S3 notification → the five real stage
handlers, drained queue by queue → SES sent message; failures end held and in the DLQ."""

from __future__ import annotations

import email
import importlib.util
import io
import json
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path

import boto3
import pytest
import pyzipper
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.bootstrap import aws as entry
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.ports import Recipient
from mailmoat.settings import AwsSettings

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
STAGES = ("authenticate", "scan", "isolate", "rewrite", "deliver")
RAW_BUCKET = "mailmoat-dev-raw-123456789012-us-east-1"  # the name events/ carry
QUARANTINE_BUCKET = "mailmoat-test-quarantine"
TABLES = {"DirectoryTable": "directory", "MessageLogTable": "messages",
          "IsolatedFilesTable": "isolated", "IdempotencyTable": "idempotency",
          "SignInAttemptsTable": "attempts"}


ARC_PEM = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption()).decode("ascii")


@dataclass
class FakeContext:
    function_name: str = "mailmoat-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:mailmoat-test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    log_group_name: str = "/aws/lambda/mailmoat-test"
    log_stream_name: str = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def template_resources() -> dict:
    """The resources a deploy with the default parameters gets (conditions decided)."""
    from tests.template.resolve import deployed_template

    return deployed_template()["Resources"]


@dataclass
class Stack:
    queues: dict[str, str]
    dlqs: dict[str, str]
    sqs: object
    s3: object
    monkeypatch: pytest.MonkeyPatch

    def handler(self, stage: str):
        """The real functions/<stage>/app.py, loaded as Lambda would, with its own env."""
        entry.aws_runtime.cache_clear()
        path = ROOT / "functions" / stage / "app.py"
        spec = importlib.util.spec_from_file_location(f"app_{stage}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.handler

    def drain(self, stage: str, *, rounds: int = 1) -> list[dict]:
        """Receive what the stage queue holds, hand it to the handler as an SQS event, delete
        what the handler did not report as failed (what the Lambda event source does)."""
        handler = self.handler(stage)
        results = []
        for _ in range(rounds):
            received = self.sqs.receive_message(
                QueueUrl=self.queues[stage], MaxNumberOfMessages=10, VisibilityTimeout=0,
                AttributeNames=["All"]).get("Messages", [])
            if not received:
                break
            event = {"Records": [{
                "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m.get("Attributes", {}), "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{stage}", "awsRegion": REGION}
                for m in received]}
            try:
                result = handler(event, FakeContext())
            except Exception:  # every record failed: powertools raises, nothing is deleted
                result = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in received]}
            failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
            for m in received:
                if m["MessageId"] not in failed:
                    self.sqs.delete_message(QueueUrl=self.queues[stage], ReceiptHandle=m["ReceiptHandle"])
            results.append(result)
        return results

    def waiting(self, name: str, *, dlq: bool = False) -> list[dict]:
        url = (self.dlqs if dlq else self.queues)[name]
        return self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                        VisibilityTimeout=0).get("Messages", [])


@pytest.fixture
def stack(monkeypatch, tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
           "MAILMOAT_RUNTIME": "aws", "MAILMOAT_MODE": "test",
           "MAILMOAT_DATA_DIR": str(tmp_path / "var"),
           "MAILMOAT_DNS_ZONE": str(ROOT / "tests/fixtures/empty-zone.json"),
           "MAILMOAT_RAW_BUCKET": RAW_BUCKET, "MAILMOAT_QUARANTINE_BUCKET": QUARANTINE_BUCKET,
           "MAILMOAT_DIRECTORY_TABLE": "directory", "MAILMOAT_MESSAGE_LOG_TABLE": "messages",
           "MAILMOAT_ISOLATED_FILES_TABLE": "isolated", "MAILMOAT_IDEMPOTENCY_TABLE": "idempotency",
           "MAILMOAT_ATTEMPTS_TABLE": "attempts",
           "MAILMOAT_RELAY_IDENTITY": "relay.example.net", "MAILMOAT_DELIVERY_MODE": "ses",
           "MAILMOAT_PORTAL_BASE_URL": "https://portal.example.net",
           "MAILMOAT_STAGE_QUEUE_URLS": "", "MAILMOAT_CONFIG": "",
           # Retries are sent back to the stage's queue at once (SQS DelaySeconds 0).
           "MAILMOAT_DELIVERY_RETRY_BASE_SECONDS": "0",
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "mailmoat"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MAILMOAT_CONFIG")
    monkeypatch.delenv("MAILMOAT_CLAMD_SOCKET", raising=False)
    resources = template_resources()
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        ddb = boto3.client("dynamodb", region_name=REGION)
        for logical, name in TABLES.items():
            props = resources[logical]["Properties"]
            kwargs = {k: props[k] for k in ("AttributeDefinitions", "KeySchema") if k in props}
            if "GlobalSecondaryIndexes" in props:
                kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
            ddb.create_table(TableName=name, BillingMode=props["BillingMode"], **kwargs)
        queues, dlqs = {}, {}
        for stage in STAGES:
            title = stage.capitalize()
            props = resources[f"{title}Queue"]["Properties"]
            dlqs[stage] = sqs.create_queue(QueueName=f"{title}DLQ")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlqs[stage], AttributeNames=["QueueArn"])[
                "Attributes"]["QueueArn"]
            redrive = {"deadLetterTargetArn": dlq_arn,
                       "maxReceiveCount": str(props["RedrivePolicy"]["maxReceiveCount"])}
            queues[stage] = sqs.create_queue(QueueName=f"{title}Queue", Attributes={
                "VisibilityTimeout": str(props["VisibilityTimeout"]),
                "RedrivePolicy": json.dumps(redrive)})["QueueUrl"]
        monkeypatch.setenv("MAILMOAT_STAGE_QUEUE_URLS",
                           ",".join(f"{s}={u}" for s, u in queues.items()))
        s3.create_bucket(Bucket=RAW_BUCKET)
        s3.create_bucket(Bucket=QUARANTINE_BUCKET)
        raw_props = resources["RawMailBucket"]["Properties"]
        [notification] = raw_props["NotificationConfiguration"]["QueueConfigurations"]
        auth_arn = sqs.get_queue_attributes(QueueUrl=queues["authenticate"],
                                            AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(Bucket=RAW_BUCKET, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": auth_arn, "Events": [notification["Event"]],
                                     # CloudFormation's S3Key is the API's Key
                                     "Filter": {"Key": {"FilterRules": notification["Filter"]["S3Key"]["Rules"]}}}]})
        monkeypatch.setenv("MAILMOAT_ARC_KEY_SECRET_ARN", boto3.client(
            "secretsmanager", region_name=REGION).create_secret(Name="arc", SecretString=ARC_PEM)["ARN"])
        boto3.client("sesv2", region_name=REGION).create_email_identity(
            EmailIdentity="relay.example.net")
        directory = DynamoDirectory("directory")
        directory.put_tenant_config(TenantConfig(
            name="corp", domains=["corp.example"], language="en",
            delivery=DeliveryConfig(mode="ses", routing_domain="corp.onmicrosoft.com")))
        directory.upsert_recipients([Recipient("alice@corp.example", "corp", name="Alice")])
        yield Stack(queues, dlqs, sqs, s3, monkeypatch)
        entry.aws_runtime.cache_clear()


def encrypted_zip() -> bytes:
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED,
                             encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(b"secret")
        zf.writestr("invoice.xlsx", b"PK not really a workbook")
    return buffer.getvalue()


def incoming(subject: str = "Invoice", *, received_for: str = "for alice@corp.example;",
             to: str = "alice@corp.example") -> bytes:
    msg = EmailMessage()
    msg["Received"] = ("from mail.example.org (mail.example.org [203.0.113.5]) by "
                       "inbound-smtp.us-east-1.amazonaws.com with SMTP id abc123 "
                       f"{received_for} Fri, 27 Nov 2026 20:47:00 +0000 (UTC)")
    msg["Return-Path"] = "<billing@example.org>"
    msg["From"] = "Billing Team <billing@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<inv-1@example.org>"
    msg["Date"] = "Fri, 27 Nov 2026 20:46:00 +0000"
    msg.set_content("Please find the invoice attached.\n")
    msg.add_attachment(encrypted_zip(), maintype="application", subtype="zip", filename="invoice.zip")
    return msg.as_bytes(policy=policy.SMTP)


def sent_messages():
    return ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages


def run_all(stack: Stack) -> None:
    for stage in STAGES:
        results = stack.drain(stage)
        assert all(r == {"batchItemFailures": []} for r in results), (stage, results)


def test_a_message_with_an_encrypted_zip_goes_through_every_stage(stack):
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0001", Body=incoming())
    run_all(stack)

    [sent] = sent_messages()
    # moto appends the To/Cc header addresses; SES itself sends to Destination only.
    assert sent.destinations[0] == "alice@corp.onmicrosoft.com"
    assert sent.source == "relay@relay.example.net"
    out = email.message_from_string(sent.raw_data, policy=policy.default)
    assert str(out["From"]) == '"Billing Team (billing@example.org)" <relay@relay.example.net>'
    assert out["Reply-To"] == "Billing Team <billing@example.org>"
    assert "billing@example.org" in out["X-Original-From"]
    assert out.get_all("ARC-Seal") and out.get_all("Authentication-Results")
    assert arc_chain(sent.raw_data.encode("utf-8")) == b"pass"  # sealed after the From rewrite
    text = "\n".join(p.get_content() for p in out.walk() if p.get_content_type() == "text/plain")
    assert "[Attachments isolated]" in text and "https://portal.example.net/m/" in text
    assert not [p for p in out.walk() if p.get_filename() == "invoice.zip"]  # isolated, not sent

    isolated = stack.s3.get_object(Bucket=QUARANTINE_BUCKET, Key="isolated/ses-msg-0001/2")
    assert isolated["Body"].read() == isolated_bytes(stack)
    record = DynamoMessageLog("messages").get("ses-msg-0001")
    assert (record.state, record.disposition, record.rcpt_to) == ("delivered", "deliver",
                                                                  ["alice@corp.example"])
    assert record.report["attachments"][0]["verdict"] == "encrypted"
    assert record.report["portal_url"].endswith("/m/<redacted>")
    assert stack.s3.get_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0001")  # the raw mail stays


def arc_chain(data: bytes) -> bytes:
    """ARC validation of what SES sent, with our sealing key's DNS record answered locally."""
    import base64

    import dkim

    public = serialization.load_pem_private_key(ARC_PEM.encode(), None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name, timeout=5):
        return record if name == b"mailmoat._domainkey.relay.example.net." else None

    cv, _results, _comment = dkim.arc_verify(data, dnsfunc=dns)
    return cv


def isolated_bytes(stack: Stack) -> bytes:
    raw = stack.s3.get_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0001")["Body"].read()
    msg = email.message_from_bytes(raw, policy=policy.default)
    [zip_part] = [p for p in msg.walk() if p.get_filename() == "invoice.zip"]
    return zip_part.get_payload(decode=True)


def test_a_redelivered_queue_message_does_not_deliver_twice(stack):
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0002", Body=incoming())
    for stage in STAGES[:-1]:
        stack.drain(stage)
    body = stack.waiting("deliver")[0]["Body"]
    stack.sqs.send_message(QueueUrl=stack.queues["deliver"], MessageBody=body)  # SQS at least once
    stack.drain("deliver", rounds=3)
    # The whole pipeline again, as an S3 re-notification would start it.
    stack.sqs.send_message(QueueUrl=stack.queues["authenticate"],
                           MessageBody=json.dumps({"id": "ses-msg-0002", "stage": "authenticate"}))
    run_all(stack)
    assert len(sent_messages()) == 1
    assert DynamoMessageLog("messages").get("ses-msg-0002").state == "delivered"


def test_concurrent_runs_of_deliver_send_once(stack):
    """Two Lambdas got the same message before either finished: the claim lets one send."""
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0003", Body=incoming())
    for stage in STAGES[:-1]:
        stack.drain(stage)
    logbook = DynamoMessageLog("messages")
    assert logbook.claim_delivery("ses-msg-0003", "alice@corp.example")  # the other run's claim
    results = stack.drain("deliver")
    assert results == [{"batchItemFailures": []}]  # deferred: the runner queued the retry
    assert sent_messages() == []
    assert logbook.get("ses-msg-0003").state == "deferred"
    assert [json.loads(m["Body"]) for m in stack.waiting("deliver")] == [
        {"id": "ses-msg-0003", "stage": "deliver"}]


def test_a_stage_that_raises_is_retried_then_held(stack, monkeypatch):
    from mailmoat.stages import scan

    def broken(self, ctx, services):
        raise RuntimeError("scanner crashed")

    monkeypatch.setattr(scan.Scan, "run", broken)
    raw = incoming()
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0004", Body=raw)
    stack.drain("authenticate")
    logbook = DynamoMessageLog("messages")
    results = stack.drain("scan", rounds=10)
    # The runner retries a failing stage (stage_max_attempts, as the queue's maxReceiveCount)
    # through the stage's own queue, then holds it: the record is acknowledged every time, the
    # DLQ is left for a function that dies outright (timeout, out of memory).
    assert len(results) == 5 and all(r == {"batchItemFailures": []} for r in results)
    record = logbook.get("ses-msg-0004")
    assert record.state == "held" and "scanner crashed" in str(record.report)
    assert stack.waiting("scan") == [] and stack.waiting("scan", dlq=True) == []
    assert stack.s3.get_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0004")["Body"].read() == raw
    assert sent_messages() == []


def test_reconcile_requeues_what_stalled(stack):
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0005", Body=incoming())
    stack.drain("authenticate")
    stack.sqs.purge_queue(QueueUrl=stack.queues["scan"])  # the scan message got lost
    runtime = entry.LambdaEntry(entry.aws_settings(AwsSettings(reconcile_after_minutes=0)))
    assert runtime.reconcile() == 1
    assert json.loads(stack.waiting("scan")[0]["Body"]) == {"id": "ses-msg-0005", "stage": "scan"}
    for stage in STAGES[1:]:
        stack.drain(stage)
    assert DynamoMessageLog("messages").get("ses-msg-0005").state == "delivered"
    assert runtime.reconcile() == 0  # final: nothing more to do


def test_a_blocked_sender_is_quarantined_not_sent(stack):
    DynamoDirectory("directory").put_tenant_config(TenantConfig(
        name="corp", domains=["corp.example"], language="en", blocked_senders=["billing@example.org"],
        delivery=DeliveryConfig(mode="ses", routing_domain="corp.onmicrosoft.com")))
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0006", Body=incoming())
    run_all(stack)
    assert sent_messages() == []
    kept = stack.s3.get_object(Bucket=RAW_BUCKET, Key="quarantine/ses-msg-0006.eml")["Body"].read()
    assert b"Subject: Invoice" in kept
    record = DynamoMessageLog("messages").get("ses-msg-0006")
    assert (record.state, record.disposition) == ("quarantined", "quarantine")
    assert record.report["deliveries"] == {"alice@corp.example": "quarantined"}


def test_a_lost_stage_state_is_rebuilt_from_the_raw_message(stack):
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0007", Body=incoming())
    stack.drain("authenticate")
    stack.s3.delete_object(Bucket=RAW_BUCKET, Key="work/ses-msg-0007/authenticate/state.json")
    for stage in STAGES[1:]:  # scan runs authenticate again for it, then itself
        assert stack.drain(stage) == [{"batchItemFailures": []}]
    assert DynamoMessageLog("messages").get("ses-msg-0007").state == "delivered"
    assert len(sent_messages()) == 1


def test_a_throttled_send_is_retried_and_sent_once(stack, monkeypatch):
    from botocore.exceptions import ClientError

    from mailmoat.adapters.aws_ses import SesMailer

    real = SesMailer.deliver
    calls = []

    def throttled_once(self, *args):
        calls.append(args[1])
        if len(calls) == 1:
            real_send = self.client.send_email

            def refuse(**kwargs):
                self.client.send_email = real_send
                raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "slow down"},
                                   "ResponseMetadata": {"HTTPStatusCode": 429}}, "SendEmail")

            self.client.send_email = refuse
        return real(self, *args)

    monkeypatch.setattr(SesMailer, "deliver", throttled_once)
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0008", Body=incoming())
    for stage in STAGES[:-1]:
        stack.drain(stage)
    first, second = stack.drain("deliver", rounds=2)
    assert first == second == {"batchItemFailures": []}  # the runner queued the retry itself
    assert len(sent_messages()) == 1 and len(calls) == 2
    assert DynamoMessageLog("messages").get("ses-msg-0008").state == "delivered"


@pytest.mark.parametrize(("received_for", "state"), [
    ("for mallory@corp.example;", "dropped"),  # SES named a recipient we do not know
    (";", "held"),  # no recipient of ours found anywhere
])
def test_a_message_for_no_registered_recipient_is_recorded_not_delivered(stack, received_for, state):
    raw = incoming(received_for=received_for,
                   to="someone@elsewhere.example" if state == "held" else "alice@corp.example")
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0009", Body=raw)
    assert stack.drain("authenticate") == [{"batchItemFailures": []}]
    assert stack.waiting("scan") == []
    assert DynamoMessageLog("messages").get("ses-msg-0009").state == state
    assert sent_messages() == []


def test_findings_are_not_repeated_by_each_stage_parsing_again(stack):
    fixture = (ROOT / "tests/fixtures/malformed-bad-base64.eml").read_bytes()
    raw = (b"Received: from mail.example.org (mail.example.org [203.0.113.5]) by inbound-smtp."
           b"us-east-1.amazonaws.com with SMTP id x for alice@corp.example; Fri, 27 Nov 2026\n"
           + fixture.replace(b"alice@example.test", b"alice@corp.example"))  # INVALID_ENCODING
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0010", Body=raw)
    run_all(stack)
    findings = DynamoMessageLog("messages").get("ses-msg-0010").report["findings"]
    keys = [(f["symbol"], f["target"], f["detail"]) for f in findings]
    assert any(k[0] == "INVALID_ENCODING" for k in keys)
    assert len(keys) == len(set(keys))


def emitted_metrics(output: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, dimensions, value) of every CloudWatch embedded-metric line in the output."""
    found = []
    for line in output.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        blob = json.loads(line)
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "mailmoat"
        (dimension_names,) = directive["Dimensions"]
        for metric in directive["Metrics"]:
            value = blob[metric["Name"]]
            found.append((metric["Name"], {d: blob[d] for d in dimension_names},
                          sum(value) if isinstance(value, list) else value))
    return found


def test_the_handlers_publish_metrics_per_stage_disposition_and_delivery(stack, capsys):
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0011", Body=incoming())
    capsys.readouterr()
    run_all(stack)
    metrics = emitted_metrics(capsys.readouterr().out)
    stages = [d["stage"] for name, d, _ in metrics if name == "StageMessages"]
    assert stages == list(STAGES)
    assert ("Dispositions", {"disposition": "deliver", "service": "mailmoat"}, 1.0) in metrics
    assert ("Deliveries", {"outcome": "delivered", "service": "mailmoat"}, 1.0) in metrics


def test_a_message_held_after_its_retries_is_counted(stack, monkeypatch, capsys):
    from mailmoat.stages import scan

    monkeypatch.setattr(scan.Scan, "run", lambda self, ctx, services: 1 / 0)
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0012", Body=incoming())
    stack.drain("authenticate")
    capsys.readouterr()
    stack.drain("scan", rounds=10)
    metrics = emitted_metrics(capsys.readouterr().out)
    failures = [v for name, d, v in metrics if name == "StageFailures" and d["stage"] == "scan"]
    assert len(failures) == 5  # every failed attempt
    assert [d["stage"] for name, d, _ in metrics if name == "DeadLettered"] == ["scan"]  # the last
    assert ("Dispositions", {"disposition": "held", "service": "mailmoat"}, 1.0) in metrics
