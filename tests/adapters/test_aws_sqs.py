"""SqsStageQueue against the SQS API model (botocore Stubber): what SQS itself enforces.

SQS delays one message by DelaySeconds 0 to 900 (SendMessage; "Valid values: 0 to 900. Maximum:
15 minutes"), and rejects a larger value, which moto accepts; the runner's backoff on AWS is
capped to match (bootstrap/aws.py SQS_MAX_DELAY_SECONDS), and the adapter clamps as well."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from mailmoat.adapters.aws_sqs import MAX_DELAY_SECONDS, SqsStageQueue
from mailmoat.bootstrap.aws import SQS_MAX_DELAY_SECONDS
from mailmoat.ports import StageRef

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/DeliverQueue"


@pytest.mark.parametrize(("delay", "sent"), [(0.0, 0), (0.2, 1), (899.5, 900), (3600.0, 900)])
def test_a_delay_is_whole_seconds_within_what_sqs_accepts(delay: float, sent: int) -> None:
    client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response("send_message", {"MessageId": "m-1"}, {
            "QueueUrl": URL, "DelaySeconds": sent,
            "MessageBody": json.dumps({"id": "20261202T000000Z-1", "stage": "deliver"})})
        SqsStageQueue({"deliver": URL}, client=client).send(
            StageRef("20261202T000000Z-1", "deliver"), delay_seconds=delay)
        stub.assert_no_pending_responses()


def test_the_retry_cap_on_aws_is_what_sqs_can_delay() -> None:
    assert SQS_MAX_DELAY_SECONDS == MAX_DELAY_SECONDS == 900


def test_a_stage_without_a_queue_in_this_function_is_refused() -> None:
    queue = SqsStageQueue({"deliver": URL}, client=object())
    with pytest.raises(ValueError, match="no queue configured for stage scan"):
        queue.send(StageRef("m", "scan"))
