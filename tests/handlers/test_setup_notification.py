"""SES's setup notification (the object it writes under the S3 action's prefix when the receipt
rule is created) is no mail: the authenticate handler acknowledges it with no message row, and
reconcile never queues it."""

import logging

from tests.e2e import test_aws_pipeline as moto

from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.bootstrap import aws as entry
from mailmoat.settings import AwsSettings

RAW_BUCKET = moto.RAW_BUCKET
stack = moto.stack  # the moto stack of the end-to-end test, as a fixture here too
KEY = "raw/AMAZON_SES_SETUP_NOTIFICATION"
# What SES writes there (the body is informational; only the key identifies it).
BODY = b"This is a test message from Amazon SES to confirm that the S3 action can write here.\r\n"


def test_the_setup_notification_is_acknowledged_without_a_message(stack, caplog):
    stack.s3.put_object(Bucket=RAW_BUCKET, Key=KEY, Body=BODY)  # S3 → AuthenticateQueue
    # (moto's s3:TestEvent from setting up the notification waits there too)
    assert any("AMAZON_SES_SETUP_NOTIFICATION" in m["Body"] for m in stack.waiting("authenticate"))
    with caplog.at_level(logging.INFO, logger="mailmoat.aws.events"):
        assert stack.drain("authenticate") == [{"batchItemFailures": []}]
    assert stack.waiting("authenticate") == [] and stack.waiting("authenticate", dlq=True) == []
    assert stack.waiting("scan") == []
    log = DynamoMessageLog("messages")
    assert log.get("AMAZON_SES_SETUP_NOTIFICATION") is None
    assert log.recent() == []
    assert [r.getMessage() for r in caplog.records
            if r.name == "mailmoat.aws.events"] == ["setup notification skipped"]


def test_mail_next_to_it_is_still_processed(stack):
    stack.s3.put_object(Bucket=RAW_BUCKET, Key=KEY, Body=BODY)
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-0101", Body=moto.incoming())
    assert stack.drain("authenticate", rounds=2)[0] == {"batchItemFailures": []}
    assert [r.id for r in DynamoMessageLog("messages").recent()] == ["ses-msg-0101"]


def test_reconcile_does_not_queue_the_setup_notification(stack):
    stack.s3.put_object(Bucket=RAW_BUCKET, Key=KEY, Body=BODY)
    stack.sqs.purge_queue(QueueUrl=stack.queues["authenticate"])  # as if its event were lost
    runtime = entry.LambdaEntry(entry.aws_settings(AwsSettings(reconcile_after_minutes=0)))
    assert runtime.reconcile() == 0
    assert stack.waiting("authenticate") == []


def test_an_s3_event_naming_it_gives_no_message_ref():
    from mailmoat.aws.events import MessageRef

    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": RAW_BUCKET}, "object": {"key": "raw%2FAMAZON_SES_SETUP_NOTIFICATION"}}}
    other = {**record, "s3": {"bucket": {"name": RAW_BUCKET}, "object": {"key": "raw/ses-msg-1"}}}
    assert [r.message_id for r in MessageRef.from_event({"Records": [record, other]})] == ["ses-msg-1"]
