"""Lambda handler (AvScanQueue): clamd's verdict on what the portal unlocked (the scan image)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.batch import SqsBatch, SQSRecord
from mailmoat.aws.observability import observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start
processor = SqsBatch()  # powertools' BatchProcessor, made at the first batch


def _record(record: SQSRecord) -> None:
    runtime.avscan(record.body)


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict, context: LambdaContext) -> dict:
    return processor(event, _record, context)
