"""Lambda handler, stage isolate (IsolateQueue): keep, isolate, delete or convert attachments."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.batch import SqsBatch, SQSRecord
from mailmoat.aws.events import MessageRef
from mailmoat.aws.observability import observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start
processor = SqsBatch()  # powertools' BatchProcessor, made at the first batch


def _record(record: SQSRecord) -> None:
    runtime.run_stage("isolate", MessageRef.from_sqs(record))


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict, context: LambdaContext) -> dict:
    return processor(event, _record, context)
