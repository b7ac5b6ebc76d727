"""The SQS handlers' partial batch response: powertools' BatchProcessor, made at the first batch.

Importing powertools' batch utility loads every event data class it knows (DynamoDB streams,
Kinesis, Kafka …, ~90 ms), so a handler module names this instead and pays for it only when a
batch arrives."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import BatchProcessor
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
else:  # for the handlers' annotations only: the real class loads with the processor
    SQSRecord = Mapping

__all__ = ["SQSRecord", "SqsBatch"]


class SqsBatch:
    """One per handler module (like the module-level BatchProcessor it replaces): each record
    goes to `record_handler`; the ones that raise come back as batchItemFailures."""

    def __init__(self) -> None:
        self._processor: BatchProcessor | None = None

    def __call__(self, event: dict[str, Any], record_handler: Callable[[SQSRecord], Any],
                 context: Any) -> dict[str, Any]:
        from aws_lambda_powertools.utilities import batch

        if self._processor is None:
            self._processor = batch.BatchProcessor(event_type=batch.EventType.SQS)
        return dict(batch.process_partial_response(event, record_handler, self._processor, context))
