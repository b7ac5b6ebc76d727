"""The Lambda handlers load without AWS, ack what names no message, and never ack real work
that the AWS adapters (issue 6) cannot do yet: such records are reported as failures."""

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


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
def test_every_stage_handler_fails_a_message_it_cannot_process_yet(stage):
    handler = load_handler(f"functions/{stage}/app.py")
    records = event("sqs-s3-notification.json") if stage == "authenticate" else (
        event("sqs-stage-message.json"))
    for record in records["Records"]:
        record["body"] = record["body"].replace('"stage": "scan"', f'"stage": "{stage}"')
    with pytest.raises(BatchProcessingError, match="AWS adapters: issue 6"):
        handler(records, FakeContext())


def test_directory_publish_reports_stream_failures():
    handler = load_handler("functions/directory_publish/app.py")
    with pytest.raises(BatchProcessingError):
        handler(event("dynamodb-directory-stream.json"), FakeContext())


@pytest.mark.parametrize("name", ["reconcile", "directory_sync", "signature_update"])
def test_scheduled_handlers_reach_the_runtime(name):
    handler = load_handler(f"functions/{name}/app.py")
    with pytest.raises(NotImplementedError, match="issue 6"):
        handler(event("schedule.json"), FakeContext())


def test_portal_handler_serves_the_http_api_event(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "web"))
    handler = load_handler("web/app.py")
    response = handler(event("http-api-portal-get.json"), FakeContext())
    assert response["statusCode"] == 404  # unknown token, same as an expired one
    assert response["headers"]["x-frame-options"] == "DENY"
