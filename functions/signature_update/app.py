"""Lambda handler: mirror the ClamAV databases into the signature bucket (schedule)."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.entry import aws_runtime

logger = Logger()
runtime = aws_runtime()  # once per cold start


@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> None:
    runtime.update_signatures()
