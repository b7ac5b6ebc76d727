"""MessageRef parsing from every Lambda event in events/ (and the hostile variants of each)."""

import json
from pathlib import Path

import pytest

from mailmoat.aws.events import MessageRef
from mailmoat.bootstrap.aws import aws_runtime

EVENTS = Path(__file__).resolve().parents[2] / "events"
BUCKET = "mailmoat-dev-raw-123456789012-us-east-1"
SES_ID = "o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1"
RAW = MessageRef(message_id=SES_ID, key=f"raw/{SES_ID}", bucket=BUCKET)


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


# event file → the refs MessageRef.from_event gives, or the error it raises
EXPECTED: dict[str, list[MessageRef] | type[Exception]] = {
    "s3-put.json": [RAW],
    "sqs-s3-notification.json": [
        RAW,
        # "+" is a space and "%2B" a plus in S3's form-encoded keys; %E8… is UTF-8
        MessageRef(message_id="請求書 2026+final", key="raw/請求書 2026+final", bucket=BUCKET),
    ],
    "sqs-s3-test-event.json": [],
    "sqs-stage-message.json": [MessageRef(message_id=SES_ID, key=f"raw/{SES_ID}", stage="scan")],
    "ses-receipt.json": [MessageRef(message_id=SES_ID, key=f"raw/{SES_ID}",
                                    recipients=("alice@example.test", "bob@example.test"))],
    "http-api-portal-get.json": ValueError,
    "schedule.json": ValueError,
    "dynamodb-directory-stream.json": ValueError,
}


def test_every_event_file_has_an_expectation():
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_from_event(name):
    expected = EXPECTED[name]
    if isinstance(expected, list):
        assert MessageRef.from_event(load(name)) == expected
    else:
        with pytest.raises(expected):
            MessageRef.from_event(load(name))


@pytest.mark.parametrize("name", [n for n in sorted(EXPECTED) if n.startswith("sqs-")])
def test_from_sqs_matches_from_event(name):
    event = load(name)
    refs = [ref for record in event["Records"] for ref in MessageRef.from_sqs(record)]
    assert refs == MessageRef.from_event(event)


def test_from_sqs_accepts_powertools_record():
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    record = SQSRecord(load("sqs-s3-notification.json")["Records"][1])
    assert MessageRef.from_sqs(record)[0].key == "raw/請求書 2026+final"


def test_key_is_decoded_once():
    # A key that really contains "%41" arrives as "%2541"; decoding twice would give "A".
    event = load("s3-put.json")
    event["Records"][0]["s3"]["object"]["key"] = "raw/id%2541"
    assert MessageRef.from_event(event)[0].key == "raw/id%41"


def test_ses_s3_action_notification_through_sns():
    # The other way to learn the envelope recipients: the S3 action's SNS notification.
    notification = load("ses-receipt.json")["Records"][0]["ses"] | {"notificationType": "Received"}
    notification["receipt"]["action"] = {"type": "S3", "bucketName": BUCKET,
                                         "objectKey": f"raw/{SES_ID}", "objectKeyPrefix": "raw/"}
    sns = {"Type": "Notification", "Message": json.dumps(notification)}
    [ref] = MessageRef.from_sqs({"body": json.dumps(sns)})
    assert (ref.bucket, ref.key, ref.message_id) == (BUCKET, f"raw/{SES_ID}", SES_ID)
    assert ref.recipients == ("alice@example.test", "bob@example.test")


@pytest.mark.parametrize("body", [
    "not json",
    "[1, 2]",
    json.dumps({"hello": "world"}),
    json.dumps({"id": SES_ID, "stage": "exfiltrate"}),
    json.dumps({"id": "../etc/passwd", "stage": "scan"}),
    json.dumps({"id": "", "stage": "scan"}),
    json.dumps({"id": "a" * 300, "stage": "scan"}),
    json.dumps({"id": "line\nbreak", "stage": "scan"}),
    json.dumps({"id": 42, "stage": "scan"}),
    json.dumps({"Type": "Notification", "Message": "not json"}),
])
def test_unrecognised_bodies_raise(body):
    # Raising sends the record back to the queue and, after maxReceiveCount, to the alarmed DLQ.
    with pytest.raises(ValueError):
        MessageRef.from_sqs({"body": body})


@pytest.mark.parametrize(("key", "event_name"), [
    ("work/abc/1", "ObjectCreated:Put"),                 # outside raw/
    ("raw/", "ObjectCreated:Put"),                       # no id
    ("raw/a//b", "ObjectCreated:Put"),                   # an empty path segment
    ("raw/a/../b", "ObjectCreated:Put"),                 # a path step
    ("raw/..", "ObjectCreated:Put"),
    (f"raw/{SES_ID}", "ObjectRemoved:Delete"),           # the bucket only notifies creations
])
def test_unexpected_s3_records_raise(key, event_name):
    event = load("s3-put.json")
    event["Records"][0]["s3"]["object"]["key"] = key
    event["Records"][0]["eventName"] = event_name
    with pytest.raises(ValueError):
        MessageRef.from_event(event)


def test_a_key_nested_below_raw_names_a_message_without_a_path():
    """Mail Manager's Write to S3 documents no key naming: a nested key is a message whose id
    has no "/" and whose ref keeps the real key for the runner."""
    event = load("s3-put.json")
    event["Records"][0]["s3"]["object"]["key"] = "raw/inp-1/2026/abc"
    [ref] = MessageRef.from_event(event)
    assert (ref.message_id, ref.key, ref.raw_key) == ("inp-1~2026~abc", "raw/inp-1/2026/abc",
                                                      "raw/inp-1/2026/abc")
    assert MessageRef.for_id(SES_ID).raw_key is None


def test_run_stage_refuses_a_misrouted_message():
    [ref] = MessageRef.from_event(load("sqs-stage-message.json"))  # queued for scan
    with pytest.raises(ValueError, match="queued for scan"):
        aws_runtime().run_stage("isolate", [ref])


def test_run_stage_refuses_unknown_stage():
    with pytest.raises(ValueError):
        aws_runtime().run_stage("teleport", [])


def test_test_event_needs_no_adapters():
    # Nothing to process: must succeed even before issue 6 brings the adapters.
    aws_runtime().run_stage("authenticate", MessageRef.from_event(load("sqs-s3-test-event.json")))
