"""powertools Logger, Metrics and Tracer for the Lambda handlers, and the counters the runtime emits.

One module so that every handler stays a few lines (`@observed`) and the core counts through
one function (`count`) instead of each caller knowing EMF. Metrics go to the CloudWatch
namespace `mailmoat` as embedded-metric-format log lines (no API call, no extra permission).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = "mailmoat"

# Names and dimensions of what the runtime counts (docs/architecture.md lists them). Dimension
# values are small closed sets (stage, disposition, outcome): one CloudWatch metric each.
# The pipeline's own counters are the runner's (runner.STAGE_MESSAGES …).
RECIPIENT_CONDITIONS_OVER_CEILING = "RecipientConditionsOverCeiling"  # tenants not published per address
RECIPIENT_RULE_CHANGES = "RecipientRuleChanges"  # SES receipt rules created, updated or deleted
# 1 when our receipt rule set is not the account's active one (another stack or app activated
# its own: this stack receives nothing), 0 when it is; published by every DirectoryPublish run.
RECEIPT_RULE_SET_INACTIVE = "ReceiptRuleSetInactive"
SIGNATURE_FILES_UPLOADED = "SignatureFilesUploaded"  # ClamAV databases that changed
SIGNATURE_FILES_DOWNLOADED = "SignatureFilesDownloaded"  # by the scanner at cold start

logger = Logger()
metrics = Metrics(namespace=NAMESPACE)

_log = logging.getLogger("mailmoat.aws")
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _tracer() -> Any:
    """The Tracer needs aws-xray-sdk (powertools' `tracer` extra). Without it the function still
    gets its invocation segment from `Tracing: Active`, only no subsegments: say so once and run
    on, rather than fail every invocation over a diagnostic."""
    if importlib.util.find_spec("aws_xray_sdk") is None:
        _log.warning("aws-xray-sdk is not installed: X-Ray shows the invocation only, no subsegments")
        return None
    from aws_lambda_powertools import Tracer

    return Tracer()


tracer = _tracer()


def observed(handler: _Handler) -> _Handler:
    """Lambda context in every log line, X-Ray segment for the invocation, the cold-start metric
    and a flush of the metrics at the end."""
    metered: Any = metrics.log_metrics(handler, capture_cold_start_metric=True)

    def wrapped(event: Any, context: Any) -> Any:
        # All counts are single metrics with their own dimensions, so the shared metric set is
        # empty at the flush: normal here, not a warning on every invocation.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No application metrics to publish")
            return metered(event, context)

    traced: Any = tracer.capture_lambda_handler(wrapped) if tracer is not None else wrapped
    return cast(_Handler, functools.wraps(handler)(logger.inject_lambda_context(traced)))


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """One EMF line: `name` with exactly these dimensions (stage=…, disposition=…, outcome=…)."""
    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE) as metric:
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension or "none")


class CloudWatchMetrics:
    """The metrics port over count(): embedded-metric lines powertools flushes per invocation."""

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        count(name, value, **dimensions)

    def observe(self, name: str, seconds: float, **dimensions: str) -> None:
        with single_metric(name=name, unit=MetricUnit.Seconds, value=seconds,
                           namespace=NAMESPACE) as metric:
            for key, dimension in dimensions.items():
                metric.add_dimension(name=key, value=dimension or "none")
