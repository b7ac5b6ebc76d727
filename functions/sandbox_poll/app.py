"""Lambda handler (schedule, every 5 minutes): the files isolated as `analysing` asked about at
CAPE once and decided (mailmoat.sandbox_verdicts); counts only in the answer."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.observability import observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict, context: LambdaContext) -> dict:
    return runtime.sandbox_poll(context.get_remaining_time_in_millis() / 1000)
