"""A tenant in each delivery mode through the real stage handlers on moto (ses is in
test_aws_pipeline.py): `mailmanager` submits to the stack's Mail Manager AUTH ingress point and
`smtp` goes straight to the tenant's host. A loopback aiosmtpd server with STARTTLS (a certificate
the client trusts through SSL_CERT_FILE, so the hostname is really checked) and AUTH stands in for
the AUTH endpoint or the tenant's host."""

from __future__ import annotations

import datetime
import email
import ipaddress
import json
from email import policy

import boto3
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.bootstrap import aws as entry
from mailmoat.config import DeliveryConfig, TenantConfig
from tests.conftest import free_port
from tests.e2e import test_aws_pipeline as moto

stack = moto.stack
INGRESS_ID = "inp-0123456789abcdefghijklmno"
PASSWORD = "generated-by-secrets-manager-0123456789"


def trusted_localhost_cert(tmp_path):
    """A certificate for "localhost" (SAN) and the CA bundle that trusts it."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


class Endpoint:
    """What the SMTP server saw: (login, mail from, rcpt tos, data, tls) per message."""

    def __init__(self, *, login: str | None) -> None:
        self.login = login
        self.messages: list[tuple[str | None, str, list[str], bytes, bool]] = []

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.login
              and auth_data.password.decode() == PASSWORD)
        return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data if session.authenticated else None
        self.messages.append((login, envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content, session.ssl is not None))
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def endpoint(tmp_path, monkeypatch, request):
    login = getattr(request, "param", INGRESS_ID)
    context, ca_file = trusted_localhost_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # ssl.create_default_context() trusts it
    handler = Endpoint(login=login)
    port = free_port()
    kwargs = {"authenticator": handler.authenticate, "auth_require_tls": True} if login else {}
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, **kwargs)
    controller.start()
    yield handler, port
    controller.stop()


def tenant_in(mode: str, *, host: str, port: int) -> None:
    DynamoDirectory("directory").put_tenant_config(TenantConfig(
        name="corp", domains=["corp.example"], language="en",
        delivery=DeliveryConfig(mode=mode, host=host, port=port, require_tls=True)))
    entry.aws_runtime.cache_clear()


def test_a_mailmanager_tenant_is_submitted_to_the_auth_endpoint_with_the_envelope_kept(stack, endpoint):
    handler, port = endpoint
    secret = boto3.client("secretsmanager", region_name=moto.REGION).create_secret(
        Name="submission", SecretString=json.dumps({"password": PASSWORD}))["ARN"]
    for name, value in {"MAILMOAT_DELIVERY_MODE": "mailmanager", "MAILMOAT_SUBMISSION_HOST": "localhost",
                        "MAILMOAT_SUBMISSION_PORT": str(port), "MAILMOAT_SUBMISSION_USERNAME": INGRESS_ID,
                        "MAILMOAT_SUBMISSION_SECRET_ARN": secret}.items():
        stack.monkeypatch.setenv(name, value)
    # The mailbox host is what DirectoryPublish relays to; the submission goes to the endpoint.
    tenant_in("mailmanager", host="corp-example.mail.protection.outlook.com", port=25)
    stack.s3.put_object(Bucket=moto.RAW_BUCKET, Key="raw/mm-msg-0001", Body=moto.incoming())
    moto.run_all(stack)

    [(login, mail_from, rcpt_tos, data, tls)] = handler.messages
    assert (login, tls) == (INGRESS_ID, True)
    # Mail Manager relays with MailFrom PRESERVE: the original sender, not a relay identity.
    assert mail_from == "billing@example.org" and rcpt_tos == ["alice@corp.example"]
    out = email.message_from_bytes(data, policy=policy.default)
    assert str(out["From"]) == "Billing Team <billing@example.org>"  # no forwarder rewrite
    assert moto.arc_chain(data) == b"pass"
    assert moto.sent_messages() == []  # nothing through SES sending
    record = DynamoMessageLog("messages").get("mm-msg-0001")
    assert (record.state, record.rcpt_to) == ("delivered", ["alice@corp.example"])


@pytest.mark.parametrize("endpoint", [None], indirect=True)  # the tenant's host takes no AUTH
def test_an_smtp_tenant_is_delivered_to_its_own_host_over_verified_starttls(stack, endpoint):
    handler, port = endpoint
    tenant_in("smtp", host="localhost", port=port)
    stack.s3.put_object(Bucket=moto.RAW_BUCKET, Key="raw/smtp-msg-0001", Body=moto.incoming())
    moto.run_all(stack)

    [(_login, mail_from, rcpt_tos, data, tls)] = handler.messages
    assert tls and mail_from == "billing@example.org" and rcpt_tos == ["alice@corp.example"]
    assert moto.arc_chain(data) == b"pass"
    assert DynamoMessageLog("messages").get("smtp-msg-0001").state == "delivered"


def test_a_mailmanager_tenant_without_the_endpoint_configured_is_held_not_lost(stack):
    """The stack was deployed with another DeliveryMode (no AUTH endpoint), but the directory
    says mailmanager: delivery cannot be attempted, so the message ends held after its retries."""
    tenant_in("mailmanager", host="corp-example.mail.protection.outlook.com", port=25)
    stack.s3.put_object(Bucket=moto.RAW_BUCKET, Key="raw/mm-msg-0002", Body=moto.incoming())
    for _ in range(12):
        for stage in moto.STAGES:
            stack.drain(stage)
    record = DynamoMessageLog("messages").get("mm-msg-0002")
    assert record.state in {"held", "failed"}, record.state
    assert record.state == "held" and "deliver" in (record.error or "")


NESTED_KEY = "raw/inp-0123456789/2026/12/02/0f1e2d3c"  # Mail Manager documents no key naming


def test_an_object_mail_manager_wrote_below_raw_is_processed_under_its_own_key(stack):
    """The S3 notification names a key nested below raw/: the message gets an id without a
    path ("/" → "~"), its row keeps the real key, and every stage reads the object there."""
    stack.s3.put_object(Bucket=moto.RAW_BUCKET, Key=NESTED_KEY, Body=moto.incoming())
    moto.run_all(stack)
    [sent] = moto.sent_messages()
    assert sent.destinations[0] == "alice@corp.onmicrosoft.com"
    record = DynamoMessageLog("messages").get("inp-0123456789~2026~12~02~0f1e2d3c")
    assert (record.state, record.raw_key) == ("delivered", NESTED_KEY)


def test_reconcile_queues_a_nested_object_that_never_got_a_row_with_its_key(stack):
    from mailmoat.aws.events import MessageRef

    stack.s3.put_object(Bucket=moto.RAW_BUCKET, Key=NESTED_KEY, Body=moto.incoming())
    stack.sqs.purge_queue(QueueUrl=stack.queues["authenticate"])  # the S3 notification was lost
    entry.aws_runtime.cache_clear()
    runtime = entry.build_aws()
    assert runtime.reconcile(datetime.timedelta(0)) == 1
    [message] = stack.waiting("authenticate")
    [ref] = MessageRef.from_body(json.loads(message["Body"]))
    assert (ref.message_id, ref.raw_key) == ("inp-0123456789~2026~12~02~0f1e2d3c", NESTED_KEY)
    moto.run_all(stack)
    assert DynamoMessageLog("messages").get(ref.message_id).state == "delivered"


@pytest.mark.parametrize("key", ["raw/a//b", "raw/a/../b", "raw/", "other/x"])
def test_keys_that_are_no_message_are_refused(key):
    from mailmoat.aws.events import message_id_for_key

    with pytest.raises(ValueError):
        message_id_for_key(key)
