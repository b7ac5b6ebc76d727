"""Prometheus metrics for `mailmoat serve`: the Metrics port under the AWS metric names, and the
`/metrics` endpoint on its own port (127.0.0.1:9465 by default).

Names: a CloudWatch metric `StageMessages{stage}` is `mailmoat_stage_messages_total{stage}` here,
a timing `StageDuration{stage}` the histogram `mailmoat_stage_duration_seconds{stage}`; the
gauges `mailmoat_queue_depth` and `mailmoat_held` are read from the message log at each scrape
(docs/operations.md has the table).

The pipeline runs in worker processes (mailmoat.local.workers, spawned): every process writes
its samples to files under PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) and
the serving process adds them up at each scrape. `mailmoat serve` sets that directory (under
the data dir, emptied at start) before the first import of prometheus_client in any process.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "mailmoat_"
# Stage timings run from a millisecond (authenticate from cache) to minutes (a slow mailbox host).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0)


def prometheus_name(name: str) -> str:
    """StageMessages → mailmoat_stage_messages (CloudWatch's CamelCase to Prometheus' snake)."""
    return PREFIX + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """An empty directory for this run's samples, named in the environment the workers inherit.
    Files of an earlier run would be added to this one's counts, so the directory starts empty."""
    path = data_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class PrometheusMetrics:
    """The Metrics port on prometheus_client. Each metric is made at its first use, its labels
    the dimensions of that first call; a later call's missing dimensions read "none"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, tuple[Any, tuple[str, ...]]] = {}

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        metric, labels = self._metric("counter", name, dimensions)
        (metric.labels(*self._values(labels, dimensions)) if labels else metric).inc(value)

    def observe(self, name: str, seconds: float, **dimensions: str) -> None:
        metric, labels = self._metric("histogram", name, dimensions)
        (metric.labels(*self._values(labels, dimensions)) if labels else metric).observe(seconds)

    @staticmethod
    def _values(labels: tuple[str, ...], dimensions: dict[str, str]) -> list[str]:
        return [str(dimensions.get(label) or "none") for label in labels]

    def _metric(self, kind: str, name: str, dimensions: dict[str, str]) -> tuple[Any, tuple[str, ...]]:
        key = f"{kind}:{name}"
        with self._lock:
            found = self._metrics.get(key)
            if found is None:
                from prometheus_client import Counter, Histogram

                labels = tuple(sorted(dimensions))
                if kind == "counter":
                    metric: Any = Counter(prometheus_name(name), f"{name} (CloudWatch name)", labels)
                else:
                    metric = Histogram(prometheus_name(name) + "_seconds", f"{name} in seconds",
                                       labels, buckets=DURATION_BUCKETS)
                found = self._metrics[key] = (metric, labels)
            return found


class MessageLogGauges:
    """A collector of what the message log says at scrape time: messages waiting to be finished
    (accepted, processing, deferred) and messages held for an admin."""

    def __init__(self, logbook: Any) -> None:
        self.logbook = logbook

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        counts: dict[str, int] = self.logbook.state_counts()
        waiting = sum(counts.get(state, 0) for state in ("accepted", "processing", "deferred"))
        yield GaugeMetricFamily(PREFIX + "queue_depth", "QueueDepth: messages not yet finished",
                                value=waiting)
        yield GaugeMetricFamily(PREFIX + "held", "Held: messages held for an admin",
                                value=counts.get("held", 0))


class MetricsServer:
    """`/metrics` on its own port: every process's samples (multiprocess mode) plus the gauges."""

    def __init__(self, host: str, port: int, logbook: Any) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        if os.environ.get(MULTIPROC_ENV):
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(MessageLogGauges(logbook))
        self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        self.url = f"http://{host}:{port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(settings: Any, logbook: Any) -> MetricsServer | None:
    """The scrape endpoint `mailmoat serve` starts, or None when MAILMOAT_METRICS_PORT is 0."""
    if not settings.metrics_port:
        return None
    return MetricsServer(settings.metrics_host, settings.metrics_port, logbook)
