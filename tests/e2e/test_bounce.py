"""Non-delivery notices end to end: a real SMTP host refuses with 5xx, a real SMTP server plays the
sender's MX, DNS is a zone file. A DSN reaches an authenticated sender, never a forged one."""

from __future__ import annotations

import dataclasses
import email
import json
from email import policy

import pytest
from aiosmtpd.controller import Controller

from mailmoat.adapters.dns import ZoneFileResolver
from mailmoat.adapters.outbound_smtp import OutboundSmtp
from mailmoat.bootstrap import bootstrap
from mailmoat.bounce import (
    Failure,
    build_dsn,
    notify_sender,
    sender_is_authenticated,
    status_of,
)
from mailmoat.config import DeliveryConfig, GatewayConfig, TenantConfig, UserConfig
from mailmoat.context import Envelope, MessageContext
from mailmoat.ports import DeliveryError
from tests.adapters.test_smtp_mailer import Recorder
from tests.conftest import free_port, make_settings

SENDER_IP = "192.0.2.10"
FORGER_IP = "198.51.100.66"
ZONE = {
    "bank.example": {"TXT": [f"v=spf1 ip4:{SENDER_IP} -all"], "MX": ["10 mx.bank.example"]},
    "mx.bank.example": {"A": ["127.0.0.1"]},
    "nullmx.example": {"MX": ["0 ."]},
    "nomx.example": {"A": ["127.0.0.2"]},
}
MESSAGE = (b"From: Treasurer <pay@bank.example>\r\nTo: alice@example.test\r\n"
           b"Subject: Invoice 42\r\nMessage-ID: <inv42@bank.example>\r\n"
           b"Date: Fri, 27 Nov 2026 10:00:00 +0900\r\n\r\nPlease pay.\r\n")


@pytest.fixture
def hosts():
    """The tenant's mailbox host (refuses alice with 550 5.1.1) and the sender's MX (records)."""
    mailbox, sender_mx = Recorder("550 5.1.1 <alice@example.test>: user unknown"), Recorder()
    controllers = []
    ports = []
    for handler in (mailbox, sender_mx):
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        ports.append(port)
    yield mailbox, sender_mx, ports[0], ports[1]
    for controller in controllers:
        controller.stop()


def _runtime(tmp_path, mailbox_port: int, mx_port: int):
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(ZONE))
    settings = make_settings(tmp_path, dns_zone=zone, outbound_smtp_port=mx_port,
                             smtp_hostname="gw.example.test")
    config = GatewayConfig(tenant=[TenantConfig(
        name="example", domains=["example.test"], language="en",
        delivery=DeliveryConfig(mode="smtp", host="127.0.0.1", port=mailbox_port),
        users=[UserConfig(address="alice@example.test")])])
    return bootstrap(settings, config=config)


def _process(runtime, client_ip: str) -> tuple[str, dict]:
    message_id = runtime.accept(MESSAGE, Envelope(client_ip=client_ip, helo="mx.bank.example",
                                                  mail_from="pay@bank.example",
                                                  rcpt_to=["alice@example.test"]))
    runtime.process_stored(message_id)
    record = runtime.services.log.get(message_id)
    assert record is not None and record.report is not None
    return record.state, record.report


def test_a_refused_delivery_sends_one_dsn_to_an_authenticated_sender(tmp_path, hosts) -> None:
    mailbox, sender_mx, mailbox_port, mx_port = hosts
    runtime = _runtime(tmp_path, mailbox_port, mx_port)
    state, report = _process(runtime, SENDER_IP)

    assert state == "failed"
    assert mailbox.messages == []
    assert "DSN_SENT" in {f["symbol"] for f in report["findings"]}
    ((mail_from, rcpts, data, _tls),) = sender_mx.messages
    assert mail_from == "<>" and rcpts == ["pay@bank.example"]  # null reverse path: no bounce loops
    dsn = email.message_from_bytes(data, policy=policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"] == "auto-replied" and dsn["In-Reply-To"] == "<inv42@bank.example>"
    human, status, headers = dsn.iter_parts()
    assert "alice@example.test" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    text = status.as_string()
    assert "Final-Recipient: rfc822; alice@example.test" in text
    assert "Action: failed" in text and "Status: 5.1.1" in text
    assert "Reporting-MTA: dns; gw.example.test" in text
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: Invoice 42" in headers.get_content() and "Please pay" not in headers.get_content()

    runtime.process_stored(runtime.services.log.recent(1)[0].id)  # a re-run bounces nothing more
    assert len(sender_mx.messages) == 1


def test_a_forged_sender_gets_no_dsn_and_the_log_says_why(tmp_path, hosts) -> None:
    _mailbox, sender_mx, mailbox_port, mx_port = hosts
    runtime = _runtime(tmp_path, mailbox_port, mx_port)
    state, report = _process(runtime, FORGER_IP)  # SPF fail for bank.example: not its mail

    assert state == "failed"
    assert sender_mx.messages == []
    (suppressed,) = [f for f in report["findings"] if f["symbol"] == "DSN_SUPPRESSED"]
    assert "not authenticated" in suppressed["detail"]


def test_a_delivery_that_stays_deferred_until_retries_run_out_is_bounced_once(tmp_path, hosts) -> None:
    mailbox, sender_mx, mailbox_port, mx_port = hosts
    mailbox.rcpt_reply = "451 4.3.0 try again later"
    runtime = _runtime(tmp_path, mailbox_port, mx_port)
    runtime.runner.policy = dataclasses.replace(runtime.runner.policy, delivery_max_attempts=2)
    state, _ = _process(runtime, SENDER_IP)
    assert state == "deferred" and sender_mx.messages == []  # a 4xx is retried, not bounced
    runtime.process_stored(runtime.services.log.recent(1)[0].id)
    record = runtime.services.log.recent(1)[0]
    assert record.state == "failed"
    ((_, _, data, _),) = sender_mx.messages
    assert "Status: 4.4.7" in data.decode() and "retries exhausted" in data.decode()


def _ctx(mail_from: str | None, details: dict) -> MessageContext:
    ctx = MessageContext(id="m1", raw=MESSAGE, envelope=Envelope(mail_from=mail_from,
                                                                 rcpt_to=["alice@example.test"]))
    ctx.auth.details.update(details)
    return ctx


@pytest.mark.parametrize(("mail_from", "details", "expected"), [
    ("pay@bank.example", {"spf": {"result": "pass", "domain": "bank.example"}}, True),
    ("pay@bank.example", {"spf": {"result": "softfail", "domain": "bank.example"}}, False),
    # SPF passed for a different domain (e.g. the HELO): proves nothing about this sender.
    ("pay@bank.example", {"spf": {"result": "pass", "domain": "other.example"}}, False),
    ("pay@mail.bank.example", {"dkim": [{"result": "pass", "domain": "bank.example"}]}, True),
    ("pay@bank.example", {"dkim": [{"result": "pass", "domain": "esp.example"}]}, False),
    ("pay@bank.example", {"dkim": [{"result": "fail", "domain": "bank.example"}]}, False),
    (None, {"spf": {"result": "pass", "domain": "bank.example"}}, False),
    ("", {}, False),
    ("MAILER-DAEMON@bank.example", {"spf": {"result": "pass", "domain": "bank.example"}}, False),
])
def test_only_an_authenticated_reverse_path_is_bounced_to(mail_from, details, expected) -> None:
    assert sender_is_authenticated(_ctx(mail_from, details)) is expected


def test_status_comes_from_the_remote_reply_or_the_class() -> None:
    assert status_of(DeliveryError("550 b'5.7.1 rejected by policy'", permanent=True)) == "5.7.1"
    assert status_of(DeliveryError("554 b'no thanks'", permanent=True)) == "5.0.0"
    assert status_of(DeliveryError("timed out", permanent=False)) == "4.0.0"


def test_a_spam_verdict_is_never_bounced(tmp_path) -> None:
    runtime = bootstrap(make_settings(tmp_path))
    ctx = _ctx("pay@bank.example", {"spf": {"result": "pass", "domain": "bank.example"}})
    ctx.spam.verdict = "spam"
    notify_sender(ctx, runtime.services, [Failure("alice@example.test", "5.1.1", "550 unknown")])
    assert [f.symbol for f in ctx.findings] == ["DSN_SUPPRESSED"]


def test_dsn_keeps_non_ascii_subjects_readable() -> None:
    raw = ("From: 経理 <pay@bank.example>\r\nSubject: =?UTF-8?B?6KuL5rGC5pu4?=\r\n\r\nx\r\n").encode()
    ctx = MessageContext(id="m2", raw=raw, envelope=Envelope(mail_from="pay@bank.example",
                                                              rcpt_to=["a@example.test"]))
    ctx.subject = "請求書"
    from datetime import UTC, datetime

    data = build_dsn(ctx, [Failure("a@example.test", "5.2.2", "552 mailbox full")],
                     reporting_mta="gw.example.test", postmaster="postmaster@gw.example.test",
                     now=datetime(2026, 11, 27, tzinfo=UTC), language="ja")
    dsn = email.message_from_bytes(data, policy=policy.default)
    assert dsn["Subject"].startswith("配信できませんでした")
    assert "Subject: 請求書" in next(iter(dsn.iter_parts())).get_content()


def test_outbound_hosts_follow_mx_order_null_mx_and_implicit_mx(tmp_path) -> None:
    zone = tmp_path / "z.json"
    zone.write_text(json.dumps({**ZONE, "multi.example": {"MX": ["20 b.multi.example", "10 a.multi.example"]},
                                "a.multi.example": {"A": ["127.0.0.3"]},
                                "b.multi.example": {"A": ["127.0.0.4"]}}))
    outbound = OutboundSmtp(ZoneFileResolver.from_file(zone), port=2526)
    assert outbound.hosts("multi.example") == [("127.0.0.3", 2526), ("127.0.0.4", 2526)]
    assert outbound.hosts("nullmx.example") == []
    assert outbound.hosts("nomx.example") == [("127.0.0.2", 2526)]  # RFC 5321 §5.1 implicit MX
    assert outbound.hosts("nowhere.example") == []
    with pytest.raises(DeliveryError) as refused:
        outbound.deliver("m", "x@nullmx.example", None, b"x")
    assert refused.value.permanent
    relay = OutboundSmtp(ZoneFileResolver.from_file(zone), relay="smarthost.example.test:587")
    assert relay.hosts("multi.example") == [("smarthost.example.test", 587)]
