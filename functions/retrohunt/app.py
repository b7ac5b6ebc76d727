"""Lambda handler (schedule, after the signature update): the retro-hunt check (the scan image)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.observability import observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict, context: LambdaContext) -> dict:
    return runtime.retrohunt()
