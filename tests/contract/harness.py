"""One small Gateway API over either runtime, so that a contract scenario is written once and run
through both: the local runtime (in-process queue, SQLite, files) and the AWS runtime on moto (the
real stage handlers drained from SQS, S3 state snapshots, DynamoDB). Both get the same tenants,
the same zone file and settings, and the same recording mailer and notice sender, given the way
the composition roots take them."""

from __future__ import annotations

import email
import functools
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from mailmoat.admin.operations import redrive
from mailmoat.bootstrap import aws as aws_root
from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig
from mailmoat.context import Envelope
from mailmoat.local.server import received_header
from mailmoat.pipeline import STAGE_NAMES
from mailmoat.ports import DeliveryError, MessageRecord, Recipient
from mailmoat.runtime import Runtime, new_message_id
from mailmoat.settings import AwsSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
RAW_BUCKET = "contract-raw"
QUARANTINE_BUCKET = "contract-quarantine"
PORTAL = "https://portal.example.net"

# The sender of every scenario: sender.example publishes SPF for CLEAN_IP, so its mail is
# authenticated and a DSN may go back to it; LISTED_IP is on the test blocklist.
SENDER = "sender@sender.example"
CLEAN_IP = "81.2.69.161"
LISTED_IP = "81.2.69.160"
BLOCKLIST = "bl.test"
ZONE: dict[str, Any] = {
    "sender.example": {"TXT": [f"v=spf1 ip4:{CLEAN_IP} ip4:{LISTED_IP} -all"]},
    ".".join(reversed(LISTED_IP.split("."))) + f".{BLOCKLIST}": {"A": ["127.0.0.2"]},
}


@dataclass(frozen=True, slots=True)
class Sent:
    """One message handed to a mailbox host (or a notice to a sender)."""

    message_id: str
    recipient: str
    data: bytes

    def text(self) -> str:
        """The text/plain parts, decoded: what the recipient reads."""
        msg = email.message_from_bytes(self.data, policy=policy.default)
        return "\n".join(str(p.get_content()) for p in msg.walk()  # type: ignore[attr-defined]
                         if p.get_content_type() == "text/plain")


@dataclass(slots=True)
class Outbox:
    """A recording Mailer. `refuse` answers a recipient with the mailbox host's refusal, or None
    to take the copy."""

    sent: list[Sent] = field(default_factory=list)
    refuse: Callable[[str], DeliveryError | None] = lambda _rcpt: None

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        refusal = self.refuse(recipient)
        if refusal is not None:
            raise refusal
        self.sent.append(Sent(message_id, recipient, data))
        return f"outbox#{len(self.sent)}"


@dataclass(frozen=True, slots=True)
class World:
    """What a scenario sets up alike on both runtimes: tenants and their users, and settings."""

    config: GatewayConfig
    settings: dict[str, Any] = field(default_factory=dict)


class Gateway:
    """The API every scenario uses. A runtime's gateway says how mail comes in (`receive`) and
    how its stages are driven (`run`); reading the outcome is the same everywhere."""

    runtime: Runtime
    outbox: Outbox  # the tenants' mailbox hosts
    notices: Outbox  # DSNs to senders

    def receive(self, raw: bytes, rcpts: list[str], *, client_ip: str = CLEAN_IP) -> str:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def record(self, message_id: str) -> MessageRecord:
        found = self.runtime.services.log.get(message_id)
        assert found is not None, f"no log row for {message_id}"
        return found

    def deliveries(self) -> list[tuple[str, str]]:
        """(message id, recipient) of every copy the mailbox hosts took, in order."""
        return [(s.message_id, s.recipient) for s in self.outbox.sent]

    def dsns(self) -> list[tuple[str, str]]:
        """(message id, sender) of every notice sent back."""
        return [(s.message_id, s.recipient) for s in self.notices.sent]

    def redrive(self, message_id: str) -> None:
        """The admin's redrive (CLI, console): locally it runs at once, on AWS through the first
        stage's queue; then whatever it queued runs."""
        assert redrive(self.runtime, message_id) is not None
        self.run()


def incoming(rcpts: list[str], *, subject: str = "Quarterly figures",
             attachment: tuple[str, bytes] | None = None) -> bytes:
    """A message from SENDER to `rcpts`, as the sender's MTA hands it over."""
    msg = EmailMessage()
    msg["From"] = f"Sender <{SENDER}>"
    msg["To"] = ", ".join(rcpts)
    msg["Subject"] = subject
    msg["Date"] = "Fri, 27 Nov 2026 19:00:00 +0900"
    msg["Message-ID"] = "<contract-1@sender.example>"
    msg.set_content("Hello,\n\nthe figures are attached as discussed.\n")
    if attachment is not None:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="zip", filename=name)
    return msg.as_bytes(policy=policy.SMTP)


def _settings_values(world: World, tmp_path: Path, arc_key: Path) -> dict[str, Any]:
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(ZONE), encoding="utf-8")
    values: dict[str, Any] = {
        "mode": "test", "data_dir": tmp_path / "var", "dns_zone": zone, "arc_key_file": arc_key,
        "generate_keys": False, "portal_base_url": PORTAL, "dnsbl_ip_zones": [BLOCKLIST],
        "stage_max_attempts": 3, "delivery_max_attempts": 3, "delivery_retry_base_seconds": 0}
    values.update(world.settings)
    return values


# --- the local runtime ----------------------------------------------------------------------------

@dataclass(slots=True)
class LocalGateway(Gateway):
    runtime: Runtime
    outbox: Outbox
    notices: Outbox
    received: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, world: World, tmp_path: Path, arc_key: Path) -> LocalGateway:
        settings = Settings(**_settings_values(world, tmp_path, arc_key))
        outbox = Outbox()
        runtime = bootstrap(settings, config=world.config, mailer=outbox)
        notices = Outbox()
        runtime.services.notices = notices  # in place of SMTP to the sender's MX
        return cls(runtime, outbox, notices)

    def receive(self, raw: bytes, rcpts: list[str], *, client_ip: str = CLEAN_IP) -> str:
        """What the SMTP listener does after DATA: its Received header, store, then 250."""
        envelope = Envelope(client_ip=client_ip, helo="mail.sender.example",
                            mail_from=SENDER, rcpt_to=rcpts)
        message_id = new_message_id()
        trace = received_header(message_id, envelope, self.runtime.settings.smtp_hostname, None)
        self.runtime.accept(trace + raw, envelope, message_id)
        self.received.append(message_id)
        return message_id

    def run(self) -> None:
        """What `mailmoat serve`'s worker does: every stage due, retries included."""
        for message_id in self.received:
            self.runtime.process_stored(message_id)


# --- the AWS runtime on moto ----------------------------------------------------------------------

@functools.cache
def _template() -> dict[str, Any]:
    """template.yaml's resources as a default deploy gets them (read, never changed)."""
    from tests.template.resolve import deployed_template

    resources: dict[str, Any] = deployed_template()["Resources"]
    return resources


def _create_tables(resources: dict[str, Any]) -> dict[str, str]:
    """Every DynamoDB table of the template, by its logical id, with the template's keys."""
    ddb = boto3.client("dynamodb", region_name=REGION)
    names = {}
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        wanted = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
        ddb.create_table(TableName=logical, BillingMode="PAY_PER_REQUEST",
                         **{k: props[k] for k in wanted if k in props})
        names[logical] = logical
    return names


def _create_queues(resources: dict[str, Any]) -> dict[str, str]:
    """The five stage queues, each with its DLQ and the template's maxReceiveCount."""
    sqs = boto3.client("sqs", region_name=REGION)
    urls = {}
    for stage in STAGE_NAMES:
        title = stage.capitalize()
        dead = sqs.create_queue(QueueName=f"{title}DLQ")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        props = resources[f"{title}Queue"]["Properties"]
        policy_ = {"deadLetterTargetArn": arn,
                   "maxReceiveCount": str(props["RedrivePolicy"]["maxReceiveCount"])}
        urls[stage] = sqs.create_queue(QueueName=f"{title}Queue", Attributes={
            "RedrivePolicy": json.dumps(policy_)})["QueueUrl"]
    return urls


def _raw_bucket(resources: dict[str, Any], first_queue: str) -> None:
    """The raw bucket and its notification to the first stage's queue (SES's S3 action → S3)."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=RAW_BUCKET)
    s3.create_bucket(Bucket=QUARANTINE_BUCKET)
    [rule] = resources["RawMailBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    arn = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=first_queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=RAW_BUCKET, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": [rule["Event"]],
                                 "Filter": {"Key": {"FilterRules": rule["Filter"]["S3Key"]["Rules"]}}}]})


@dataclass(frozen=True, slots=True)
class LambdaContext:
    function_name: str = "contract"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:contract"
    aws_request_id: str = "contract-request"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _function_queues(resources: dict[str, Any], function: str, urls: dict[str, str]) -> str:
    """The function's MAILMOAT_STAGE_QUEUE_URLS as the template gives it (the queues this one
    may send to), with each queue's ${LogicalId} resolved."""
    value = resources[function]["Properties"]["Environment"]["Variables"]["MAILMOAT_STAGE_QUEUE_URLS"]
    by_id = {f"{stage.capitalize()}Queue": url for stage, url in urls.items()}
    return re.sub(r"\$\{(\w+)\}", lambda m: by_id[m.group(1)], value["Fn::Sub"])


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _handler(stage: str, runtime: Runtime) -> Handler:
    """functions/<stage>/app.py loaded as its Lambda loads it, with the runtime its cold start
    builds (this function's queues) put in place."""
    spec = importlib.util.spec_from_file_location(f"contract_app_{stage}",
                                                  ROOT / "functions" / stage / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(runtime.settings, AwsSettings)
    module.runtime = aws_root.LambdaEntry(runtime.settings, _runtime=runtime, role=stage)  # type: ignore[attr-defined]
    handler: Handler = module.handler
    return handler


@dataclass(slots=True)
class AwsGateway(Gateway):
    runtime: Runtime  # the portal function's: the admin's redrive, the message log
    outbox: Outbox
    notices: Outbox
    queues: dict[str, str]
    handlers: dict[str, Handler]
    count: int = 0

    @classmethod
    @contextmanager
    def build(cls, world: World, tmp_path: Path, arc_key: Path) -> Iterator[AwsGateway]:
        with mock_aws():
            resources = _template()
            tables = _create_tables(resources)
            queues = _create_queues(resources)
            _raw_bucket(resources, queues[STAGE_NAMES[0]])
            # The stack's default delivery is SES, whose copies leave From the relay identity
            # (rewritten before the seal); the recording mailer stands where SesMailer would.
            settings = AwsSettings(**_settings_values(world, tmp_path, arc_key), runtime="aws",
                                   relay_identity="relay.example.net", raw_bucket=RAW_BUCKET,
                                   quarantine_bucket=QUARANTINE_BUCKET,
                                   directory_table=tables["DirectoryTable"],
                                   message_log_table=tables["MessageLogTable"],
                                   isolated_files_table=tables["IsolatedFilesTable"],
                                   idempotency_table=tables["IdempotencyTable"],
                                   spam_table=tables["SpamQuarantineTable"])
            _publish_tenants(world.config, settings)
            outbox, notices = Outbox(), Outbox()

            def function(name: str, role: str) -> Runtime:
                urls = _function_queues(resources, name, queues)
                runtime = aws_root.build_aws(settings.model_copy(update={"stage_queue_urls": urls}),
                                             mailer=outbox, role=role)
                runtime.services.notices = notices  # in place of SES
                return runtime

            handlers = {stage: _handler(stage, function(f"{stage.capitalize()}Function", stage))
                        for stage in STAGE_NAMES}
            try:
                yield cls(function("PortalFunction", "portal"), outbox, notices, queues, handlers)
            finally:
                aws_root.aws_runtime.cache_clear()  # the one each handler's import made

    def receive(self, raw: bytes, rcpts: list[str], *, client_ip: str = CLEAN_IP) -> str:
        """What SES's S3 action stores: raw/<SES message id>, with SES's Return-Path and its
        Received header, which names the envelope recipient when there is one only."""
        self.count += 1
        message_id = f"ses-{self.count:04d}"
        named = f" for {rcpts[0]}" if len(rcpts) == 1 else ""
        headers = (f"Return-Path: <{SENDER}>\r\n"
                   f"Received: from mail.sender.example (mail.sender.example [{client_ip}])"
                   f" by inbound-smtp.{REGION}.amazonaws.com with SMTP id {message_id}{named};"
                   " Fri, 27 Nov 2026 10:00:00 +0000\r\n")
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=RAW_BUCKET, Key=f"raw/{message_id}", Body=headers.encode("ascii") + raw)
        return message_id

    def run(self, rounds: int = 40) -> None:
        """What the SQS event sources do: each queue's messages to its handler, those it did not
        report failed deleted, until every queue is empty (the DLQs take the poison ones)."""
        for _ in range(rounds):
            if not any([self._drain(stage) for stage in STAGE_NAMES]):
                return
        raise AssertionError(f"the stage queues did not empty in {rounds} rounds")

    def _drain(self, stage: str) -> bool:
        sqs = boto3.client("sqs", region_name=REGION)
        url = self.queues[stage]
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       VisibilityTimeout=0).get("Messages", [])
        if not messages:
            return False
        event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                              "body": m["Body"], "attributes": {}, "messageAttributes": {},
                              "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                              "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{stage}",
                              "awsRegion": REGION} for m in messages]}
        try:
            failed = {f["itemIdentifier"]
                      for f in self.handlers[stage](event, LambdaContext())["batchItemFailures"]}
        except Exception:  # every record failed: powertools raises, nothing is deleted
            failed = {m["MessageId"] for m in messages}
        for m in messages:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return True


def _publish_tenants(config: GatewayConfig, settings: AwsSettings) -> None:
    """The AWS runtime reads tenants from the directory table (what the console saves)."""
    from mailmoat.adapters.aws_dynamodb import DynamoDirectory

    directory = DynamoDirectory(settings.directory_table)
    for tenant in config.tenants:
        directory.put_tenant_config(tenant)
        directory.upsert_recipients(Recipient(u.address, tenant.name) for u in tenant.users)
