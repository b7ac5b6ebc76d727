"""Lambda handler: directory-table changes → the SES receipt rules' recipient conditions."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import batch
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.entry import aws_runtime

logger = Logger()
runtime = aws_runtime()  # once per cold start
processor = batch.BatchProcessor(event_type=batch.EventType.DynamoDBStreams)


def _record(record: DynamoDBRecord) -> None:
    runtime.publish_directory(record.raw_event)


@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    return batch.process_partial_response(event, _record, processor, context)
