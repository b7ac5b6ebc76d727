"""The local gateway end to end: real SMTP in on loopback → pipeline → Maildir out."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.local.server import Gateway
from tests.conftest import DEMO_CONFIG, FIXTURES, ROOT, free_port, make_settings, wait_for_smtp


@pytest.fixture
def gateway(tmp_path, request):
    overrides = getattr(request, "param", {})
    settings = make_settings(tmp_path, smtp_port=free_port(), **overrides)
    gw = Gateway(bootstrap(settings))
    gw.start()
    yield gw
    gw.stop()


def maildir_files(root: Path, address: str) -> list[Path]:
    local, _, domain = address.partition("@")
    box = root / "maildir" / domain / local / "new"
    return sorted(box.iterdir()) if box.exists() else []


def send(port: int, raw: bytes, rcpts: list[str], sender: str = "s@sender.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.sendmail(sender, rcpts, raw)


def test_message_lands_in_the_recipients_maildir(gateway) -> None:
    raw = (FIXTURES / "japanese-iso2022jp.eml").read_bytes()
    send(gateway.runtime.settings.smtp_port, raw, ["alice@example.test", "bob@example.test"])
    assert gateway.worker.drain()
    data_dir = gateway.runtime.settings.data_dir
    for rcpt in ("alice@example.test", "bob@example.test"):
        (delivered,) = maildir_files(data_dir, rcpt)
        text = delivered.read_bytes()
        assert f"Delivered-To: {rcpt}".encode() in text
        assert b"by mailmoat.localhost (mailmoat) with ESMTP" in text  # our Received header
    (record,) = gateway.runtime.services.log.recent()
    assert record.state == "delivered"
    assert record.message_id == "<jp-1@sender.example.jp>"
    assert set(record.timings) >= {"authenticate", "scan", "isolate", "rewrite", "deliver"}


def test_unknown_recipient_is_refused_at_rcpt(gateway) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.runtime.settings.smtp_port) as smtp:
        smtp.ehlo()
        smtp.mail("s@sender.example")
        code, text = smtp.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, _ = smtp.rcpt("alice@example.test")
        assert code == 250


@pytest.mark.slow
def test_a_20_mb_message_is_accepted_and_delivered(gateway) -> None:
    blob = os.urandom(15 * 1024 * 1024).hex().encode()[: 20 * 1024 * 1024]
    lines = b"\r\n".join(blob[i:i + 76] for i in range(0, len(blob), 76))
    raw = (b"From: s@sender.example\r\nTo: alice@example.test\r\nSubject: big\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + lines + b"\r\n")
    assert len(raw) > 20 * 1024 * 1024
    send(gateway.runtime.settings.smtp_port, raw, ["alice@example.test"])
    assert gateway.worker.drain(timeout=120)
    (delivered,) = maildir_files(gateway.runtime.settings.data_dir, "alice@example.test")
    assert delivered.stat().st_size > 20 * 1024 * 1024


@pytest.mark.parametrize("gateway", [{"max_message_bytes": 1024 * 1024}], indirect=True)
def test_a_message_over_the_limit_gets_552(gateway) -> None:
    raw = b"Subject: too big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1100
    port = gateway.runtime.settings.smtp_port
    # A client that declares SIZE is refused at MAIL FROM ...
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(port, raw, ["alice@example.test"])
    assert refused.value.smtp_code == 552
    # ... and one that does not is refused after DATA.
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.helo("client.example")  # HELO: no ESMTP, so no SIZE parameter
        smtp.mail("s@sender.example")
        smtp.rcpt("alice@example.test")
        code, _ = smtp.data(raw)
    assert code == 552
    assert gateway.runtime.services.log.recent() == []


@pytest.mark.parametrize("fixture", ["malformed-no-headers.eml", "malformed-bare-lf.eml",
                                     "malformed-bad-base64.eml"])
def test_malformed_mail_is_accepted_and_ends_recorded(gateway, fixture) -> None:
    send(gateway.runtime.settings.smtp_port, (FIXTURES / fixture).read_bytes(),
         ["alice@example.test"])
    assert gateway.worker.drain()
    (record,) = gateway.runtime.services.log.recent()
    assert record.state in {"delivered", "held", "quarantined"}
    assert record.report and record.report["findings"]


def test_deeply_nested_mail_is_quarantined_with_a_finding(gateway) -> None:
    from tests.unit.test_message import nested

    send(gateway.runtime.settings.smtp_port, nested(500), ["alice@example.test"])
    assert gateway.worker.drain()
    (record,) = gateway.runtime.services.log.recent()
    assert record.state == "quarantined"
    assert gateway.runtime.services.blobs.exists(f"quarantine/{record.id}.eml")
    assert maildir_files(gateway.runtime.settings.data_dir, "alice@example.test") == []


# --- crash safety: a real `mailmoat serve` process, killed with SIGKILL ----------------------

def _serve(data_dir: Path, smtp_port: int, portal_port: int, hold: bool) -> subprocess.Popen:
    env = {**os.environ, "MAILMOAT_DATA_DIR": str(data_dir), "MAILMOAT_CONFIG": str(DEMO_CONFIG),
           "MAILMOAT_SMTP_PORT": str(smtp_port), "MAILMOAT_PORTAL_PORT": str(portal_port),
           "MAILMOAT_DNS_ZONE": str(FIXTURES / "empty-zone.json"),
           "MAILMOAT_HOLD_PROCESSING": "true" if hold else "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if wait_for_smtp(smtp_port, proc):
        return proc
    raise AssertionError(f"serve did not start: {proc.stdout.read().decode() if proc.stdout else ''}")


def _log(data_dir: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "mailmoat.local.cli", "--data-dir", str(data_dir),
                          "log", "--json"], cwd=ROOT, capture_output=True, check=True,
                         env={**os.environ, "MAILMOAT_CONFIG": str(DEMO_CONFIG)})
    return json.loads(out.stdout)


@pytest.mark.slow
def test_kill_9_after_250_then_restart_delivers_exactly_once(tmp_path) -> None:
    data_dir = tmp_path / "var"
    smtp_port, portal_port = free_port(), free_port()
    # Processing held: the 250 has been said, nothing delivered yet, then SIGKILL.
    proc = _serve(data_dir, smtp_port, portal_port, hold=True)
    send(smtp_port, (FIXTURES / "plain.eml").read_bytes(), ["alice@example.test"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert maildir_files(data_dir, "alice@example.test") == []
    assert [r["state"] for r in _log(data_dir)] == ["accepted"]

    for _ in range(2):  # restart twice: the second start must not deliver again
        proc = _serve(data_dir, smtp_port, portal_port, hold=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _log(data_dir)[0]["state"] != "delivered":
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert len(maildir_files(data_dir, "alice@example.test")) == 1
    (row,) = _log(data_dir)
    assert row["state"] == "delivered"
    assert row["deliveries"]["alice@example.test"].startswith("delivered")


def test_a_crash_between_delivery_and_bookkeeping_does_not_deliver_twice(tmp_path) -> None:
    settings = make_settings(tmp_path)
    runtime = bootstrap(settings)
    message_id = runtime.accept((FIXTURES / "plain.eml").read_bytes(),
                                _envelope(["alice@example.test"]))
    runtime.process_stored(message_id)
    # Simulate losing the bookkeeping (the process died after the file was written).
    runtime.services.log.db.query("DELETE FROM deliveries")
    runtime.services.log.update(message_id, state="processing")
    runtime.process_stored(message_id)
    assert len(maildir_files(settings.data_dir, "alice@example.test")) == 1


def _envelope(rcpts):
    from mailmoat.context import Envelope

    return Envelope(client_ip="203.0.113.5", helo="mail.sender.example",
                    mail_from="sender@sender.example", rcpt_to=rcpts)


def test_a_message_that_keeps_crashing_the_process_is_held_not_retried_forever(tmp_path) -> None:
    runtime = bootstrap(make_settings(tmp_path, stage_max_attempts=2))
    message_id = runtime.accept((FIXTURES / "plain.eml").read_bytes(),
                                _envelope(["alice@example.test"]))
    # Two starts of the scan stage died while this message was processing (as after a
    # native-code crash): the restart resumes there, and the third start holds it.
    runtime.services.log.update(message_id, state="processing", attempts=2, stage="scan")
    runtime = bootstrap(make_settings(tmp_path, stage_max_attempts=2))  # the restart
    assert runtime.process_stored(message_id) is None
    record = runtime.services.log.get(message_id)
    assert record.state == "held" and "did not complete in 2 attempts" in record.error
    assert maildir_files(runtime.settings.data_dir, "alice@example.test") == []


class _Mailer:
    """Scripted outcomes per call, to drive the deliver stage's bookkeeping."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def deliver(self, message_id, recipient, mail_from, data):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _stored(tmp_path, mailer):
    runtime = bootstrap(make_settings(tmp_path, delivery_retry_base_seconds=0.01), mailer=mailer)
    message_id = runtime.accept((FIXTURES / "plain.eml").read_bytes(), _envelope(["alice@example.test"]))
    return runtime, message_id


def test_a_4xx_releases_the_claim_and_the_retry_delivers(tmp_path) -> None:
    from mailmoat.ports import DeliveryError

    mailer = _Mailer(DeliveryError("451 later", permanent=False, code=451), "smtp://host")
    runtime, message_id = _stored(tmp_path, mailer)
    runtime.process_stored(message_id)
    assert runtime.services.log.get(message_id).state == "deferred"
    runtime.process_stored(message_id)
    record = runtime.services.log.get(message_id)
    assert record.state == "delivered" and mailer.calls == 2


def test_a_send_that_may_have_happened_is_held_never_repeated(tmp_path) -> None:
    from mailmoat.ports import DeliveryError

    lost = DeliveryError("connection lost after DATA", permanent=False, maybe_delivered=True)
    mailer = _Mailer(lost, "smtp://host")
    runtime, message_id = _stored(tmp_path, mailer)
    runtime.process_stored(message_id)
    record = runtime.services.log.get(message_id)
    assert record.state == "held" and "redrive --resend" in record.error
    # A plain re-run (e.g. after a restart) still does not send again ...
    runtime.runner.redrive(message_id)  # every stage again
    runtime.process_stored(message_id)
    assert mailer.calls == 1 and runtime.services.log.get(message_id).state == "held"


def test_an_interrupted_claim_is_uncertain_for_a_non_idempotent_mailer(tmp_path) -> None:
    mailer = _Mailer("smtp://host")
    runtime, message_id = _stored(tmp_path, mailer)
    # A previous run claimed the delivery and died before recording an outcome.
    assert runtime.services.log.claim_delivery(message_id, "alice@example.test")
    runtime.process_stored(message_id)
    assert mailer.calls == 0
    assert runtime.services.log.get(message_id).state == "held"
    runtime.services.log.release_delivery(message_id, "alice@example.test")  # what --resend does
    runtime.runner.redrive(message_id)  # every stage again
    runtime.process_stored(message_id)
    assert mailer.calls == 1 and runtime.services.log.get(message_id).state == "delivered"
