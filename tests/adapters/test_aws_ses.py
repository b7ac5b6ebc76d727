"""SesMailer on moto: forwarder semantics of DESIGN §1, checked on the message SES sent."""

import email
from email import policy

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from mailmoat.adapters.aws_ses import SesMailer
from mailmoat.aws.forwarder import forwarded, relay_address, routing_address
from mailmoat.ports import DeliveryError
from tests.conftest import use_aws_test_credentials

ORIGINAL = (
    b"ARC-Seal: i=1; a=rsa-sha256; d=gw.example; s=mailmoat; cv=none; b=abc\r\n"
    b"ARC-Message-Signature: i=1; a=rsa-sha256; d=gw.example; s=mailmoat; h=from; bh=x; b=y\r\n"
    b"ARC-Authentication-Results: i=1; mailmoat; spf=pass\r\n"
    b"Authentication-Results: mailmoat; spf=pass smtp.mailfrom=example.com\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; h=from:to;\r\n"
    b"\tbh=abc; b=def\r\n"
    b"Return-Path: <bounce@example.com>\r\n"
    b"Sender: list@example.com\r\n"
    b"From: =?utf-8?b?5bGx55Sw?= <taro@example.com>\r\n"
    b"To: alice@corp.example\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"\r\n"
    b"body\r\n")


@pytest.fixture
def ses(monkeypatch):
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("sesv2", region_name="us-east-1")
        client.create_email_identity(EmailIdentity="relay.example.net")
        yield client


def sent():
    return ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages


def test_forwarded_message_as_ses_sent_it(ses):
    mailer = SesMailer("relay.example.net", routing_domain="corp.onmicrosoft.com", client=ses)
    where = mailer.deliver("m1", "alice@corp.example", "bounce@example.com", ORIGINAL)
    assert where.startswith("ses:")
    [message] = sent()
    assert message.source == "relay@relay.example.net"
    assert message.destinations[0] == "alice@corp.onmicrosoft.com"
    msg = email.message_from_string(message.raw_data, policy=policy.default)
    assert str(msg["From"]) == '"山田 (taro@example.com)" <relay@relay.example.net>'
    assert msg["From"].addresses[0].addr_spec == "relay@relay.example.net"
    assert str(msg["Reply-To"]) == "山田 <taro@example.com>"
    assert "taro@example.com" in str(msg["X-Original-From"])
    assert msg.get_all("DKIM-Signature") is None
    assert msg.get_all("Sender") is None and msg.get_all("Return-Path") is None
    for name in ("ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results",
                 "Authentication-Results"):
        assert len(msg.get_all(name)) == 1, name
    assert len(msg.get_all("From")) == 1
    assert msg.get_content().strip() == "body"


def test_an_existing_reply_to_is_kept():
    data = ORIGINAL.replace(b"Subject:", b"Reply-To: desk@example.com\r\nSubject:")
    msg = email.message_from_bytes(forwarded(data, "relay@r.example"), policy=policy.default)
    assert msg.get_all("Reply-To") == ["desk@example.com"]


def test_a_message_without_from_still_gets_the_relay_from():
    out = forwarded(b"Subject: x\r\n\r\nbody\r\n", "relay@r.example")
    assert out.startswith(b"From: relay@r.example\r\n")


def test_addresses():
    assert relay_address("relay.example.net") == "relay@relay.example.net"
    assert relay_address("gw@relay.example.net") == "gw@relay.example.net"
    assert routing_address("bob@corp.example", "corp.onmicrosoft.com") == "bob@corp.onmicrosoft.com"
    assert routing_address("bob@corp.example", None) == "bob@corp.example"


def test_an_unverified_relay_is_a_permanent_failure(ses):
    mailer = SesMailer("not-verified.example", client=ses)
    with pytest.raises(DeliveryError) as info:
        mailer.deliver("m1", "alice@corp.example", None, ORIGINAL)
    assert info.value.permanent
    assert not sent()


# --- notices (DSNs) ------------------------------------------------------------------------------

DSN = (b"From: Mail Delivery System <postmaster@relay.example.net>\r\n"
       b"To: billing@example.org\r\n"
       b"Subject: Undelivered mail returned to sender\r\n"
       b"Auto-Submitted: auto-replied\r\n"
       b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n"
       b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nrefused\r\n--b--\r\n")


def test_a_notice_goes_out_as_written_from_the_postmaster(ses):
    from mailmoat.adapters.aws_ses import SesNoticeSender

    where = SesNoticeSender("postmaster@relay.example.net").deliver("m1", "billing@example.org", None, DSN)
    assert where.startswith("ses:")
    [sent] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert sent.source == "postmaster@relay.example.net"
    assert sent.destinations[0] == "billing@example.org"
    assert sent.raw_data.encode() == DSN  # no forwarder rewriting: no Reply-To, no X-Original-From


def test_a_notice_from_an_unverified_domain_is_a_permanent_failure(ses):
    from mailmoat.adapters.aws_ses import SesNoticeSender

    with pytest.raises(DeliveryError) as failure:
        SesNoticeSender("postmaster@not-verified.example").deliver("m1", "a@example.org", None, DSN)
    assert failure.value.permanent
    with pytest.raises(ValueError):
        SesNoticeSender("relay.example.net")


@pytest.mark.parametrize(("relay", "postmaster", "expected"), [
    ("relay.example.net", None, "postmaster@relay.example.net"),  # a domain identity
    ("relay@relay.example.net", None, "relay@relay.example.net"),  # an address identity: itself
    ("relay.example.net", "bounces@relay.example.net", "bounces@relay.example.net"),
    ("", None, "postmaster@mailmoat.localhost"),
])
def test_the_aws_postmaster_is_on_a_verified_identity(relay, postmaster, expected):
    from mailmoat.settings import AwsSettings

    settings = AwsSettings(relay_identity=relay, postmaster_address=postmaster, smtp_hostname="mailmoat.localhost")
    assert settings.postmaster == expected


def test_build_services_sends_notices_through_ses_not_the_forwarder(ses, tmp_path):
    from mailmoat.adapters.aws_ses import SesMailer, SesNoticeSender
    from mailmoat.bootstrap.aws import build_aws
    from mailmoat.config import GatewayConfig
    from mailmoat.settings import AwsSettings

    settings = AwsSettings(mode="test", data_dir=tmp_path, relay_identity="relay.example.net",
                           raw_bucket="raw", directory_table="d", message_log_table="m")
    services = build_aws(settings, config=GatewayConfig()).services
    assert isinstance(services.notices, SesNoticeSender) and not isinstance(services.notices, SesMailer)
    assert services.notices.from_address == "postmaster@relay.example.net"
    assert services.settings.postmaster == "postmaster@relay.example.net"  # the DSN's From


@pytest.mark.parametrize(("code", "status"), [("TooManyRequestsException", 429),
                                              ("LimitExceededException", 400),
                                              ("ThrottlingException", 400)])
def test_a_throttled_send_is_retried_later_not_failed(code, status):
    """SES answers a send over the account's rate with a throttling error (SES guide: "Maximum
    sending rate exceeded"): the copy is deferred, so the runner re-queues it with a delay
    (DelaySeconds) and acknowledges the record — it never counts against maxReceiveCount."""
    from botocore.stub import Stubber

    client = boto3.client("sesv2", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_client_error("send_email", service_error_code=code, http_status_code=status,
                          service_message="Maximum sending rate exceeded.")
    with stub, pytest.raises(DeliveryError) as failure:
        SesMailer("relay.example.net", client=client).deliver("m1", "alice@corp.example", None, ORIGINAL)
    assert failure.value.permanent is False and failure.value.maybe_delivered is False
