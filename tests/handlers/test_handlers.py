"""The Lambda handlers load without AWS, ack what names no message, never ack work they could
not do (reported as batch item failures), and process the events/ samples on moto."""

import importlib.util
import json
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from tests.e2e import test_aws_pipeline as moto

from mailmoat.adapters.aws_dynamodb import DynamoMessageLog
from mailmoat.aws import entry

ROOT = Path(__file__).resolve().parents[2]
RAW_BUCKET, incoming = moto.RAW_BUCKET, moto.incoming
stack = moto.stack  # the moto stack of the end-to-end test, as a fixture here too
EVENTS = ROOT / "events"


FakeContext = moto.FakeContext  # the same Lambda context stand-in as the end-to-end test


def load_handler(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"handler_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def test_s3_test_event_is_acknowledged():
    handler = load_handler("functions/authenticate/app.py")
    assert handler(event("sqs-s3-test-event.json"), FakeContext()) == {"batchItemFailures": []}


def test_unprocessed_records_are_reported_not_acked():
    handler = load_handler("functions/scan/app.py")
    mixed = event("sqs-s3-test-event.json")
    mixed["Records"] += event("sqs-stage-message.json")["Records"]
    result = handler(mixed, FakeContext())
    failed = "8b6f0c7e-31a2-4d0e-9b55-3f1f6d8e2c40"
    assert result == {"batchItemFailures": [{"itemIdentifier": failed}]}


def test_a_message_on_the_wrong_queue_fails():
    handler = load_handler("functions/isolate/app.py")  # the stage message is queued for scan
    with pytest.raises(BatchProcessingError):
        handler(event("sqs-stage-message.json"), FakeContext())


@pytest.mark.parametrize("stage", ["authenticate", "scan", "isolate", "rewrite", "deliver"])
def test_a_stage_handler_without_its_resources_fails_the_records(stage, monkeypatch):
    for name in ("MAILMOAT_RAW_BUCKET", "MAILMOAT_DIRECTORY_TABLE", "MAILMOAT_MESSAGE_LOG_TABLE"):
        monkeypatch.delenv(name, raising=False)
    entry.aws_runtime.cache_clear()
    handler = load_handler(f"functions/{stage}/app.py")
    records = event("sqs-s3-notification.json") if stage == "authenticate" else (
        event("sqs-stage-message.json"))
    for record in records["Records"]:
        record["body"] = record["body"].replace('"stage": "scan"', f'"stage": "{stage}"')
    with pytest.raises(BatchProcessingError, match=r"table name is required|unexpected bucket"):
        handler(records, FakeContext())
    entry.aws_runtime.cache_clear()


def test_the_s3_notification_event_is_processed_with_decoded_keys(stack):
    """events/sqs-s3-notification.json names raw/<id> and a form-encoded key with a space, a
    plus and Japanese; both objects are read and accepted into the message log."""
    raw = incoming()
    for key in ("raw/o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1", "raw/請求書 2026+final"):
        stack.s3.put_object(Bucket=RAW_BUCKET, Key=key, Body=raw)
    handler = stack.handler("authenticate")
    assert handler(event("sqs-s3-notification.json"), FakeContext()) == {"batchItemFailures": []}
    logbook = DynamoMessageLog("messages")
    for message_id in ("o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1", "請求書 2026+final"):
        record = logbook.get(message_id)
        assert record.rcpt_to == ["alice@corp.example"] and record.client_ip == "203.0.113.5"
    assert len(stack.waiting("scan")) == 2


def test_the_stage_message_event_runs_its_stage(stack):
    message_id = "o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1"
    stack.s3.put_object(Bucket=RAW_BUCKET, Key=f"raw/{message_id}", Body=incoming())
    stack.sqs.send_message(QueueUrl=stack.queues["authenticate"],
                           MessageBody=json.dumps({"id": message_id, "stage": "authenticate"}))
    stack.drain("authenticate")
    stack.sqs.purge_queue(QueueUrl=stack.queues["scan"])
    handler = stack.handler("scan")
    assert handler(event("sqs-stage-message.json"), FakeContext()) == {"batchItemFailures": []}
    assert json.loads(stack.waiting("isolate")[0]["Body"]) == {"id": message_id, "stage": "isolate"}


def test_directory_publish_reports_stream_failures():
    handler = load_handler("functions/directory_publish/app.py")
    with pytest.raises(BatchProcessingError):
        handler(event("dynamodb-directory-stream.json"), FakeContext())


def test_reconcile_reaches_the_runtime(stack):
    handler = stack.handler("authenticate")  # sets the environment; reconcile needs no queue of its own
    assert handler is not None
    entry.aws_runtime.cache_clear()
    assert load_handler("functions/reconcile/app.py")(event("schedule.json"), FakeContext()) is None


@pytest.mark.parametrize("name", ["directory_sync", "signature_update"])
def test_scheduled_handlers_reach_the_runtime(name):
    handler = load_handler(f"functions/{name}/app.py")
    with pytest.raises(NotImplementedError, match="issue 6"):
        handler(event("schedule.json"), FakeContext())


def test_portal_handler_serves_the_http_api_event(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "web"))
    monkeypatch.setenv("MAILMOAT_DATA_DIR", str(tmp_path))  # no AWS settings: local runtime
    handler = load_handler("web/app.py")
    response = handler(event("http-api-portal-get.json"), FakeContext())
    assert response["statusCode"] == 404  # unknown token, same as an expired one
    assert response["headers"]["x-frame-options"] == "DENY"


def test_the_portal_serves_an_isolated_file_page_on_the_aws_runtime(stack, monkeypatch):
    """The portal built on runtime.bootstrap with MAILMOAT_RUNTIME=aws (DynamoDB isolation
    store, S3 quarantine) opens the link the delivered notice carries."""
    import re

    from fastapi.testclient import TestClient

    from mailmoat.runtime import bootstrap
    from mailmoat.settings import Settings

    monkeypatch.syspath_prepend(str(ROOT / "web"))
    from mailmoat_web.app import create_app

    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-portal", Body=incoming())
    moto.run_all(stack)
    [sent] = moto.sent_messages()
    import email
    from email import policy

    out = email.message_from_string(sent.raw_data, policy=policy.default)
    text = "\n".join(p.get_content() for p in out.walk() if p.get_content_type() == "text/plain")
    token = re.search(r"https://portal\.example\.net/m/([A-Za-z0-9_-]+)", text).group(1)
    client = TestClient(create_app(bootstrap(Settings()), sweep_every=None))
    page = client.get(f"/m/{token}")
    assert page.status_code == 200 and "invoice.zip" in page.text
    assert client.get("/m/not-a-token").status_code == 404


def test_an_ses_notification_through_sns_carries_every_envelope_recipient(stack):
    """With an SNS topic on the S3 action, SES's receipt notification names all recipients
    (Bcc ones too), which the stored message cannot; the runtime takes them from there."""
    ses = event("ses-receipt.json")["Records"][0]["ses"]
    ses["receipt"]["recipients"] = ["alice@corp.example", "bob@corp.example"]
    ses["receipt"]["action"] = {"type": "S3", "bucketName": RAW_BUCKET,
                                "objectKey": "raw/o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1"}
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1",
                        Body=incoming())
    notification = {"notificationType": "Received", **ses}
    record = event("sqs-s3-notification.json")["Records"][0]
    record["body"] = json.dumps({"Type": "Notification", "Message": json.dumps(notification)})
    handler = stack.handler("authenticate")
    assert handler({"Records": [record]}, FakeContext()) == {"batchItemFailures": []}
    logged = DynamoMessageLog("messages").get("o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1")
    assert logged.rcpt_to == ["alice@corp.example", "bob@corp.example"]
