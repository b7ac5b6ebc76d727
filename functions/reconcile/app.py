"""Lambda handler: re-queue every stored message that is not in a final state (schedule)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.observability import logger, observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict, context: LambdaContext) -> None:
    logger.info("reconciled", extra={"requeued": runtime.reconcile()})
