"""Lambda handler (AvScanQueue): clamd's verdict on what the portal unlocked (the scan image)."""

from aws_lambda_powertools.utilities import batch
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.observability import observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start
processor = batch.BatchProcessor(event_type=batch.EventType.SQS)


def _record(record: SQSRecord) -> None:
    runtime.avscan(record.body)


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict, context: LambdaContext) -> dict:
    return batch.process_partial_response(event, _record, processor, context)
