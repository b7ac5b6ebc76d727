"""SmtpMailer against a real SMTP server (aiosmtpd) on loopback: STARTTLS, 4xx, 5xx."""

from __future__ import annotations

import datetime
import ssl

import pytest
from aiosmtpd.controller import Controller

from mailmoat.adapters.smtp import SmtpMailer
from mailmoat.ports import DeliveryError
from tests.conftest import free_port


class Recorder:
    def __init__(self, rcpt_reply: str = "250 OK") -> None:
        self.rcpt_reply = rcpt_reply
        self.messages: list[tuple[str, list[str], bytes, bool]] = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        if not self.rcpt_reply.startswith("250"):
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        tls = session.ssl is not None
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content, tls))
        return "250 OK"


def self_signed(tmp_path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


@pytest.fixture
def server(request, tmp_path):
    params = getattr(request, "param", {})
    handler = Recorder(params.get("rcpt_reply", "250 OK"))
    kwargs = {}
    if params.get("tls"):
        kwargs["tls_context"] = self_signed(tmp_path)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    yield handler, port
    controller.stop()


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return ctx


@pytest.mark.parametrize("server", [{"tls": True}], indirect=True)
def test_delivers_over_starttls_when_offered(server) -> None:
    handler, port = server
    mailer = SmtpMailer("127.0.0.1", port, require_tls=True, tls_context=_client_tls())
    mailer.deliver("id1", "alice@example.test", "s@x.test", b"Subject: t\r\n\r\nbody\r\n")
    ((mail_from, rcpts, data, tls),) = handler.messages
    assert (mail_from, rcpts, tls) == ("s@x.test", ["alice@example.test"], True)
    assert b"body" in data


def test_require_tls_refuses_plaintext_host(server) -> None:
    _, port = server
    with pytest.raises(DeliveryError) as err:
        SmtpMailer("127.0.0.1", port, require_tls=True).deliver("i", "a@x.test", None, b"x\r\n")
    assert not err.value.permanent


@pytest.mark.parametrize(("server", "permanent"), [
    ({"rcpt_reply": "550 5.1.1 no such user"}, True),
    ({"rcpt_reply": "451 4.3.0 try later"}, False),
], indirect=["server"])
def test_rejections_are_classified(server, permanent) -> None:
    _, port = server
    with pytest.raises(DeliveryError) as err:
        SmtpMailer("127.0.0.1", port).deliver("i", "a@x.test", None, b"x\r\n")
    assert err.value.permanent is permanent


def test_connection_refused_is_temporary() -> None:
    with pytest.raises(DeliveryError) as err:
        SmtpMailer("127.0.0.1", free_port(), timeout=2).deliver("i", "a@x.test", None, b"x\r\n")
    assert not err.value.permanent


class HangUpAfterData(Recorder):
    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content, False))
        server.transport.close()  # the host has the data and hangs up before its 250
        return "250 OK"


def failed_delivery(handler: Recorder) -> DeliveryError:
    """Deliver one message to a loopback server run by `handler`; the delivery must fail."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with pytest.raises(DeliveryError) as err:
            SmtpMailer("127.0.0.1", port, timeout=5).deliver("i", "a@x.test", None, b"x\r\n")
    finally:
        controller.stop()
    return err.value


def test_a_hang_up_after_data_is_maybe_delivered_not_a_plain_retry() -> None:
    handler = HangUpAfterData()
    error = failed_delivery(handler)
    assert error.maybe_delivered and not error.permanent
    assert len(handler.messages) == 1


class RefuseAfterData(Recorder):
    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    async def handle_DATA(self, server, session, envelope):
        return self.reply


@pytest.mark.parametrize(("reply", "permanent"), [("554 5.7.1 rejected", True),
                                                   ("452 4.3.1 full", False)])
def test_a_refusal_after_data_is_not_a_delivery(reply, permanent) -> None:
    error = failed_delivery(RefuseAfterData(reply))
    assert error.permanent is permanent and not error.maybe_delivered
