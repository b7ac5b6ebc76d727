"""Lambda handler: directory-table changes (stream) or the hourly check → SES recipient conditions."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.observability import observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict, context: LambdaContext) -> dict:
    # One recompute of the whole set per batch: it succeeds or fails (and is retried) as one.
    runtime.publish_directory(event)
    return {"batchItemFailures": []}
