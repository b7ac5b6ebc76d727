"""Prometheus `/metrics` of `mailmoat serve` (issue 18, item 2): scraped after a few messages went
through two worker processes, under the AWS metric names (adapters/prometheus.py)."""

from __future__ import annotations

import os
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailmoat.adapters.prometheus import MessageLogGauges, prometheus_name
from mailmoat.adapters.sqlite import SqliteDatabase, SqliteMessageLog
from mailmoat.ports import MessageRecord
from tests.conftest import DEMO_CONFIG, FIXTURES, free_port, stop_process, wait_for_smtp
from tests.unit.isolation.builders import aes_zip

ROOT = Path(__file__).resolve().parents[2]


def _message(subject: str, zipped: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@sender.example"
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@sender.example>"
    msg.set_content("hello\n")
    if zipped:
        msg.add_attachment(aes_zip({"a.txt": b"secret\n"}), maintype="application", subtype="zip",
                           filename="invoice.zip")
    return msg.as_bytes()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[int, int]]:
    smtp_port, portal_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "MAILMOAT_DATA_DIR": str(tmp_path / "var"), "MAILMOAT_CONFIG": str(DEMO_CONFIG),
           "MAILMOAT_MODE": "test", "MAILMOAT_WORKERS": "2", "MAILMOAT_SMTP_PORT": str(smtp_port),
           "MAILMOAT_PORTAL_PORT": str(portal_port), "MAILMOAT_METRICS_PORT": str(metrics_port),
           "MAILMOAT_DNS_ZONE": str(FIXTURES / "empty-zone.json")}
    output = tmp_path / "serve.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        assert wait_for_smtp(smtp_port, proc, timeout=90), f"serve did not start: {output.read_text()[-3000:]}"
        yield smtp_port, metrics_port
    finally:
        stop_process(proc, timeout=30)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


@pytest.mark.timeout(180)
def test_metrics_after_a_few_messages_through_two_workers(serve: tuple[int, int]) -> None:
    smtp_port, metrics_port = serve
    sent = [_message(f"clean {n}") for n in range(3)] + [_message("encrypted zip", zipped=True)]
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        for raw in sent:
            smtp.sendmail("sender@sender.example", ["alice@example.test"], raw)
    deadline = time.monotonic() + 120
    while True:
        try:
            samples = _scrape(metrics_port)
        except OSError:  # not listening yet
            samples = {}
        finished = _total(samples, prometheus_name("Dispositions") + "_total")
        if finished >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert finished == len(sent), samples
    assert _total(samples, "mailmoat_dispositions_total", disposition="deliver") == len(sent)
    assert _total(samples, "mailmoat_deliveries_total", outcome="delivered") == len(sent)
    assert _total(samples, "mailmoat_verdicts_total", verdict="encrypted") == 1
    assert _total(samples, "mailmoat_symbols_total", symbol="ENCRYPTED_ARCHIVE") == 1
    for stage in ("authenticate", "scan", "isolate", "rewrite", "deliver"):
        assert _total(samples, "mailmoat_stage_messages_total", stage=stage) == len(sent)
        assert _total(samples, "mailmoat_stage_duration_seconds_count", stage=stage) == len(sent)
    assert samples[("mailmoat_queue_depth", ())] == 0
    assert samples[("mailmoat_held", ())] == 0


@pytest.mark.timeout(120)
def test_the_metrics_port_listens_on_loopback_only(serve: tuple[int, int]) -> None:
    _, metrics_port = serve
    deadline = time.monotonic() + 30
    while True:  # the scrape endpoint starts just after the SMTP listener
        try:
            socket.create_connection(("127.0.0.1", metrics_port), timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "no /metrics on loopback"
            time.sleep(0.2)
    # This machine's own outward address (a UDP "connect" only picks the route; nothing is sent).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.51.100.1", 9))
        outward = probe.getsockname()[0]
    if outward.startswith("127."):
        pytest.skip("no address but loopback on this machine")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((outward, metrics_port), timeout=2).close()


def test_queue_depth_and_held_come_from_the_message_log(tmp_path: Path) -> None:
    logbook = SqliteMessageLog(SqliteDatabase(tmp_path / "db.sqlite3"))
    for n, state in enumerate(["accepted", "processing", "deferred", "held", "held", "delivered"]):
        logbook.accept(MessageRecord(id=f"m{n}", received_at=datetime(2026, 12, 3, tzinfo=UTC), state=state))
    gauges = {f.name: f.samples[0].value for f in MessageLogGauges(logbook).collect()}
    assert gauges == {"mailmoat_queue_depth": 3, "mailmoat_held": 2}


def test_cloudwatch_names_become_prometheus_names() -> None:
    assert prometheus_name("StageMessages") == "mailmoat_stage_messages"
    assert prometheus_name("DeadLettered") == "mailmoat_dead_lettered"
