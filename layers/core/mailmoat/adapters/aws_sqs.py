"""SqsStageQueue: hands a message to the next stage's queue as {"id", "stage"}."""

from __future__ import annotations

import json
from typing import Any

import boto3


class SqsStageQueue:
    def __init__(self, *, client: Any = None) -> None:
        self.client = client if client is not None else boto3.client("sqs")

    def send(self, queue_url: str, message_id: str, stage: str) -> None:
        if not queue_url:
            raise ValueError(f"no queue configured for stage {stage}")
        self.client.send_message(QueueUrl=queue_url,
                                 MessageBody=json.dumps({"id": message_id, "stage": stage}))
