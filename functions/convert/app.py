"""Lambda handler (invoked synchronously by the isolate and portal functions): one file under
isolated/convert/<id>/ made into an inert PDF by LibreOffice (the convert image)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailmoat.aws.observability import observed
from mailmoat.bootstrap.aws import aws_runtime

runtime = aws_runtime()  # once per cold start; soffice starts at the first conversion


@observed  # powertools Logger, Tracer, Metrics (namespace mailmoat)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return runtime.convert(event)
