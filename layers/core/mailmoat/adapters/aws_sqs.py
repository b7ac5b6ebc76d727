"""SqsStageQueue: hands a stage to its SQS queue as {"id", "stage"}, delayed when asked."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import boto3

from mailmoat.ports import StageRef

# SQS's largest per-message delay (DelaySeconds 0 to 900, SendMessage API reference): a longer
# backoff becomes 15 minutes; the runtime's retry policy on AWS is capped to match.
MAX_DELAY_SECONDS = 900


class SqsStageQueue:
    def __init__(self, urls: Mapping[str, str], *, client: Any = None) -> None:
        self.urls = dict(urls)
        self.client = client if client is not None else boto3.client("sqs")

    def send(self, ref: StageRef, delay_seconds: float = 0.0) -> None:
        url = self.urls.get(ref.stage)
        if not url:
            raise ValueError(f"no queue configured for stage {ref.stage}")
        delay = min(MAX_DELAY_SECONDS, max(0, math.ceil(delay_seconds)))
        body = {"id": ref.message_id, "stage": ref.stage}
        if ref.raw_key:
            body["key"] = ref.raw_key
        self.client.send_message(QueueUrl=url, DelaySeconds=delay, MessageBody=json.dumps(body))
