"""Lambda handler: the daily digest of quarantined spam to the recipients who asked for it (schedule)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.observability import observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict, context: LambdaContext) -> None:
    runtime.send_spam_digests()
