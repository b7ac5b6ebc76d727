"""One envelope naming recipients of several tenants, end to end (DESIGN §1 "One message per
tenant"): a real SMTP client → the gateway's listener on loopback → one message per tenant, each
through its own tenant's policy, language, delivery route and admin; and the same on the AWS
stack on moto. Each test fails when the first recipient's tenant decides for the whole envelope."""

from __future__ import annotations

import json
import re
import smtplib
import time
from dataclasses import dataclass, field
from email import message_from_bytes, message_from_string, policy
from email.message import EmailMessage, Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.admin.accounts import create_account
from mailmoat.bootstrap import bootstrap
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.isolation import resolve
from mailmoat.local.server import Gateway
from mailmoat.ports import MessageRecord, Recipient
from mailmoat.states import MessageState
from tests.conftest import free_port, make_settings
from tests.e2e.test_aws_pipeline import (  # noqa: F401 (stack: a fixture)
    RAW_BUCKET,
    STAGES,
    encrypted_zip,
    incoming,
    sent_messages,
    stack,
)
from tests.unit.admin.helpers import PASSWORD, Console, admin_store, open_console, text_of

ALICE, CAROL, DAVE = "alice@example.test", "carol@other.test", "dave@relay.test"
SENDER = "s@sender.example"  # no SPF record: no banner
BLOCKED = "bad@blocked.example"  # on example.test's blocked_senders only
SPOOFED = "ceo@spoofed.example"  # SPF -all: fails from loopback, so every copy gets a banner
ZONE = {"spoofed.example": {"TXT": ["v=spf1 -all"]}}

CONFIG = """
[[tenant]]
name = "example.test"
domains = ["example.test"]
language = "ja"
isolation = "all"
blocked_senders = ["{blocked}"]
[tenant.delivery]
mode = "maildir"
[[tenant.users]]
address = "{alice}"

[[tenant]]
name = "other.test"
domains = ["other.test"]
language = "en"
isolation = "risky"
[tenant.delivery]
mode = "smtp"
host = "127.0.0.1"
port = {other_port}
[[tenant.users]]
address = "{carol}"

[[tenant]]
name = "relay.test"
domains = ["relay.test"]
language = "en"
[tenant.delivery]
mode = "smtp"
host = "127.0.0.1"
port = {relay_port}
[[tenant.users]]
address = "{dave}"
"""

JA_NOTICE, EN_NOTICE = "【添付ファイルの分離】", "[Attachments isolated]"
JA_BANNER, EN_BANNER = "【注意】このメールの差出人を確認できませんでした", "CAUTION: the sender"
TOKEN = re.compile(r"/m/([A-Za-z0-9_-]+)")


class MailboxHost:
    """A tenant's mailbox host: a real SMTP server on loopback that keeps what it is given."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"

    def copies(self, address: str) -> list[bytes]:
        return [data for _, rcpts, data in self.received if rcpts == [address]]


@dataclass
class Tenants:
    """The gateway with three tenants, and the mailbox hosts behind other.test and relay.test."""

    gateway: Gateway
    hosts: dict[str, MailboxHost]
    consoles: dict[str, Console] = field(default_factory=dict)

    @property
    def log(self):
        return self.gateway.runtime.services.log

    def send(self, raw: bytes, rcpts: list[str], sender: str = SENDER) -> str:
        """One SMTP transaction; returns the id the one 250 after DATA named."""
        with smtplib.SMTP("127.0.0.1", self.gateway.runtime.settings.smtp_port, timeout=30) as smtp:
            smtp.ehlo("mx.sender.example")
            assert smtp.mail(sender)[0] == 250
            for rcpt in rcpts:
                assert smtp.rcpt(rcpt)[0] == 250
            code, reply = smtp.data(raw)
            # A second reply to DATA would be read as the answer to this NOOP.
            assert smtp.noop() == (250, b"OK")
        assert code == 250, reply
        return reply.decode().rpartition("queued as ")[2]

    def settle(self, message_id: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.gateway.worker.drain(timeout=1)
            rows = [self.log.get(message_id), *self.children(message_id).values()]
            if all(r is not None and MessageState(r.state).final for r in rows):
                return
            time.sleep(0.05)
        raise AssertionError(f"{message_id} did not finish: {rows}")

    def children(self, message_id: str) -> dict[str, MessageRecord]:
        """The messages split from one envelope, by tenant."""
        found = [r for r in self.log.recent(200) if r.id.startswith(f"{message_id}.")]
        return {r.tenant: r for r in sorted(found, key=lambda r: r.id)}

    def row_of(self, message_id: str, address: str) -> MessageRecord:
        """The one log row of this envelope that carried `address` on (a child, or the envelope
        itself when it was not split)."""
        (row,) = [r for r in self.log.recent(200) if r.id.split(".")[0] == message_id
                  and r.state != "split" and address in r.rcpt_to]
        return row

    def maildir(self, address: str) -> list[bytes]:
        local, _, domain = address.partition("@")
        box = self.gateway.runtime.settings.data_dir / "maildir" / domain / local / "new"
        return [p.read_bytes() for p in sorted(box.iterdir())] if box.exists() else []

    def copy_of(self, address: str) -> Message:
        """The one copy the recipient got, whichever route it came by."""
        found = [*self.maildir(address), *(c for h in self.hosts.values() for c in h.copies(address))]
        assert len(found) == 1, f"{address} got {len(found)} copies"
        return message_from_bytes(found[0], policy=policy.default)

    def console(self, tenant: str) -> Console:
        """The admin console, signed in as the admin of `tenant`."""
        if tenant not in self.consoles:
            runtime = self.gateway.runtime
            create_account(admin_store(runtime), email=f"admin@{tenant}", tenant=tenant,
                           password=PASSWORD, now=runtime.services.clock.now(),
                           known_tenants=["example.test", "other.test", "relay.test"])
            console = open_console(runtime)
            assert console.login(f"admin@{tenant}").status_code == 303
            self.consoles[tenant] = console
        return self.consoles[tenant]


@pytest.fixture
def tenants(tmp_path: Path):
    hosts = {"other.test": MailboxHost(), "relay.test": MailboxHost()}
    controllers = {name: Controller(host, hostname="127.0.0.1", port=free_port())
                   for name, host in hosts.items()}
    for controller in controllers.values():
        controller.start()
    config = tmp_path / "tenants.toml"
    config.write_text(CONFIG.format(alice=ALICE, carol=CAROL, dave=DAVE, blocked=BLOCKED,
                                    other_port=controllers["other.test"].port,
                                    relay_port=controllers["relay.test"].port), encoding="utf-8")
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(ZONE), encoding="utf-8")
    settings = make_settings(tmp_path, smtp_port=free_port(), config=config, dns_zone=zone)
    gateway = Gateway(bootstrap(settings))
    gateway.start()
    yield Tenants(gateway, hosts)
    gateway.stop()
    for controller in controllers.values():
        controller.stop()


def mail(to: list[str], *, sender: str = SENDER, subject: str = "quarterly figures",
         attachments: tuple[tuple[str, bytes, str], ...] = ()) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender <{sender}>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0900"
    msg["Message-ID"] = f"<{abs(hash((tuple(to), subject)))}@sender.example>"
    msg.set_content("Figures attached.\nhttps://example.com/figures\n")
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=policy.SMTP)


def text_of_copy(copy: Message) -> str:
    return "\n".join(str(p.get_content()) for p in copy.walk() if p.get_content_type() == "text/plain")


def filenames(copy: Message) -> list[str]:
    return [name for p in copy.walk() if (name := p.get_filename())]


NOTES = (("notes.txt", b"Nothing to see here.\n", "text/plain"),)
# Each case names another tenant's recipient before alice@example.test and after her.
TWO_ORDERS = pytest.mark.parametrize("rcpts", [[CAROL, ALICE], [ALICE, CAROL]], ids=["carol-first",
                                                                                   "alice-first"])


@pytest.mark.parametrize("rcpts", [[CAROL, DAVE, ALICE], [DAVE, ALICE, CAROL], [ALICE, CAROL, DAVE]],
                         ids=["carol-first", "dave-first", "alice-first"])
def test_each_tenants_copy_goes_through_its_own_delivery_route(tenants: Tenants, rcpts) -> None:
    message_id = tenants.send(mail(rcpts), rcpts)
    tenants.settle(message_id)
    # other.test's mailbox host got carol's copy and only hers; relay.test's dave's.
    assert [rc for _, rc, _ in tenants.hosts["other.test"].received] == [[CAROL]]
    assert [rc for _, rc, _ in tenants.hosts["relay.test"].received] == [[DAVE]]
    assert len(tenants.maildir(ALICE)) == 1
    assert tenants.maildir(CAROL) == [] and tenants.maildir(DAVE) == []
    # One message per tenant, in the order each tenant was first named; the envelope ends split.
    parent = tenants.log.get(message_id)
    assert parent.state == "split" and parent.tenant is None
    children = tenants.children(message_id)
    named = {ALICE: "example.test", CAROL: "other.test", DAVE: "relay.test"}
    assert list(children) == [named[r] for r in rcpts]
    assert [r.id for r in children.values()] == [f"{message_id}.{n}" for n in (1, 2, 3)]
    for tenant, child in children.items():
        assert child.state == "delivered"
        assert child.rcpt_to == [r for r in rcpts if named[r] == tenant]


@TWO_ORDERS
def test_a_sender_blocked_by_one_tenant_never_reaches_its_recipient(tenants: Tenants, rcpts) -> None:
    message_id = tenants.send(mail(rcpts, sender=BLOCKED), rcpts, sender=BLOCKED)
    tenants.settle(message_id)
    assert tenants.maildir(ALICE) == [] and tenants.hosts["other.test"].copies(ALICE) == []
    # other.test does not block the sender: carol gets it.
    assert "Figures attached." in text_of_copy(tenants.copy_of(CAROL))
    alices, carols = tenants.row_of(message_id, ALICE), tenants.row_of(message_id, CAROL)
    assert alices.state == "quarantined" and carols.state == "delivered"
    assert "BLOCKED_SENDER" in {f["symbol"] for f in alices.report["findings"]}


@TWO_ORDERS
def test_isolation_all_takes_alices_harmless_file_and_carol_keeps_hers(tenants: Tenants, rcpts) -> None:
    message_id = tenants.send(mail(rcpts, attachments=NOTES), rcpts)
    tenants.settle(message_id)
    alice = tenants.copy_of(ALICE)
    assert "notes.txt" not in filenames(alice)
    text = text_of_copy(alice)
    assert JA_NOTICE in text and "notes.txt" in text
    (token,) = set(TOKEN.findall(text))
    store = tenants.gateway.runtime.services.isolation
    assert resolve(store, token, tenants.gateway.runtime.services.clock.now()) is not None
    carol = tenants.copy_of(CAROL)
    assert filenames(carol) == ["notes.txt"]
    assert EN_NOTICE not in text_of_copy(carol) and "/m/" not in text_of_copy(carol)
    assert [f.filename for f in store.files(tenants.row_of(message_id, ALICE).id)] == ["notes.txt"]
    assert store.files(tenants.row_of(message_id, CAROL).id) == []


@TWO_ORDERS
def test_each_tenants_admin_sees_only_its_own_child(tenants: Tenants, rcpts) -> None:
    message_id = tenants.send(mail(rcpts, attachments=NOTES), rcpts)
    tenants.settle(message_id)
    alices, carols = tenants.row_of(message_id, ALICE).id, tenants.row_of(message_id, CAROL).id

    other = tenants.console("other.test")
    trace = other.get("/admin/t/other.test/trace").text
    assert alices not in trace and ALICE not in text_of(trace)
    assert carols in trace
    base = "/admin/t/other.test"
    assert other.get(f"{base}/messages/{alices}").status_code == 404
    assert other.get(f"{base}/messages/{message_id}").status_code == 404  # nor the parent
    assert other.post(f"{base}/messages/{alices}/raw").status_code == 404
    assert other.post(f"{base}/messages/{message_id}/raw").status_code == 404
    isolated = other.get(f"{base}/isolated").text
    assert alices not in isolated and ALICE not in isolated and "notes.txt" not in isolated
    assert other.post(f"{base}/isolated/{alices}/revoke", recipient=ALICE).status_code == 404
    assert other.get(f"/admin/t/example.test/messages/{alices}").status_code == 404
    runtime = tenants.gateway.runtime
    (token,) = set(TOKEN.findall(text_of_copy(tenants.copy_of(ALICE))))
    assert resolve(runtime.services.isolation, token, runtime.services.clock.now()) is not None

    own = tenants.console("example.test")
    page = own.get("/admin/t/example.test/trace").text
    assert alices in page and carols not in page and CAROL not in text_of(page)
    assert re.findall(r"/admin/t/example\.test/messages/([^\"]+)\"", page) == [alices]
    detail = own.get(f"/admin/t/example.test/messages/{alices}")
    assert detail.status_code == 200 and ALICE in detail.text and CAROL not in detail.text
    assert runtime.services.log.get(alices).rcpt_to == [ALICE]
    assert own.get(f"/admin/t/example.test/messages/{carols}").status_code == 404
    isolated = own.get("/admin/t/example.test/isolated").text
    assert alices in isolated and "notes.txt" in isolated and CAROL not in isolated


@TWO_ORDERS
def test_the_example_admin_downloads_the_original_of_alices_child(tenants: Tenants, rcpts) -> None:
    """Not a first-recipient-decides case (the unsplit envelope's row is raw/<its id>): a child's
    original is the raw object it shares with its envelope, MessageRecord.raw_key."""
    message_id = tenants.send(mail(rcpts), rcpts)
    tenants.settle(message_id)
    alices = tenants.children(message_id)["example.test"].id
    own = tenants.console("example.test")
    detail = own.get(f"/admin/t/example.test/messages/{alices}").text
    assert f"/admin/t/example.test/messages/{alices}/raw" in detail  # the download is offered
    response = own.post(f"/admin/t/example.test/messages/{alices}/raw")
    assert response.status_code == 200
    stored = tenants.gateway.runtime.services.blobs.get(f"raw/{message_id}")
    assert response.content == stored  # the original the children share


@TWO_ORDERS
def test_notices_and_banners_are_in_each_tenants_language(tenants: Tenants, rcpts) -> None:
    zipped = (("figures.zip", encrypted_zip(), "application/zip"),)  # isolated in every tenant
    message_id = tenants.send(mail(rcpts, sender=SPOOFED, attachments=zipped), rcpts, sender=SPOOFED)
    tenants.settle(message_id)
    alice, carol = text_of_copy(tenants.copy_of(ALICE)), text_of_copy(tenants.copy_of(CAROL))
    assert JA_NOTICE in alice and JA_BANNER in alice
    assert EN_NOTICE not in alice and EN_BANNER not in alice
    assert EN_NOTICE in carol and EN_BANNER in carol
    assert JA_NOTICE not in carol and JA_BANNER not in carol


@pytest.mark.parametrize(("visible", "hidden"), [(ALICE, CAROL), (CAROL, ALICE)])
@pytest.mark.parametrize("hidden_first", [True, False], ids=["bcc-first", "bcc-second"])
def test_a_bcc_recipient_of_another_tenant_appears_nowhere_in_this_tenants_child(
        tenants: Tenants, visible: str, hidden: str, hidden_first: bool) -> None:
    rcpts = [hidden, visible] if hidden_first else [visible, hidden]
    message_id = tenants.send(mail([visible]), rcpts)  # `hidden` is on the envelope only: Bcc
    tenants.settle(message_id)
    row = tenants.row_of(message_id, visible)
    assert row.rcpt_to == [visible]
    assert hidden not in repr(row)  # rcpt_to, report, deliveries, error
    copy = tenants.copy_of(visible)
    assert hidden not in copy.as_string()
    (received,) = [v for v in copy.get_all("Received") if "(mailmoat)" in str(v)]
    assert " for " not in " ".join(str(received).split())  # our header names no recipient
    # The hidden recipient got a copy of their own, in a message of their own tenant.
    hidden_row = tenants.row_of(message_id, hidden)
    assert (hidden_row.rcpt_to, hidden_row.tenant) == ([hidden], hidden.partition("@")[2])
    assert tenants.copy_of(hidden)["Subject"] == "quarterly figures"


# --- the AWS stack on moto -------------------------------------------------------------------

@pytest.mark.parametrize("recipients", [["carol@partner.example", "alice@corp.example"],
                                        ["alice@corp.example", "carol@partner.example"]],
                         ids=["partner-first", "corp-first"])
def test_an_ses_event_for_two_tenants_becomes_two_messages_each_sent_its_own_way(
        stack, recipients) -> None:  # noqa: F811 (the fixture imported above)
    directory = DynamoDirectory("directory")
    directory.put_tenant_config(TenantConfig(
        name="partner", domains=["partner.example"], language="ja",
        delivery=DeliveryConfig(mode="ses", routing_domain="partner.onmicrosoft.com")))
    directory.upsert_recipients([Recipient("carol@partner.example", "partner", name="Carol")])
    key = "raw/ses-split-0001"
    # To names alice only: carol (Bcc) is known from the SES receipt event alone.
    stack.s3.put_object(Bucket=RAW_BUCKET, Key=key, Body=incoming(received_for=";"))
    stack.sqs.purge_queue(QueueUrl=stack.queues["authenticate"])  # the event below starts it
    notification = {"notificationType": "Received",
                    "mail": {"messageId": "ses-split-0001", "destination": recipients},
                    "receipt": {"recipients": recipients, "action": {
                        "type": "S3", "bucketName": RAW_BUCKET, "objectKey": key}}}
    stack.sqs.send_message(QueueUrl=stack.queues["authenticate"], MessageBody=json.dumps(
        {"Type": "Notification", "Message": json.dumps(notification)}))
    for stage in STAGES:
        results = stack.drain(stage, rounds=2)  # authenticate: the envelope, then its children
        assert all(r == {"batchItemFailures": []} for r in results), (stage, results)

    # moto appends the To/Cc header addresses; SES itself sends to Destination only.
    sent = {m.destinations[0]: message_from_string(m.raw_data, policy=policy.default)
            for m in sent_messages()}
    assert sorted(sent) == ["alice@corp.onmicrosoft.com", "carol@partner.onmicrosoft.com"]
    alice = text_of_copy(sent["alice@corp.onmicrosoft.com"])
    carol = text_of_copy(sent["carol@partner.onmicrosoft.com"])
    assert JA_NOTICE in carol and EN_NOTICE not in carol  # partner's language
    assert EN_NOTICE in alice and JA_NOTICE not in alice
    assert "carol" not in sent["alice@corp.onmicrosoft.com"].as_string()

    logbook = DynamoMessageLog("messages")
    assert logbook.get("ses-split-0001").state == "split"
    children = {r.tenant: r for r in (logbook.get(f"ses-split-0001.{n}") for n in (1, 2))}
    assert {t: (r.rcpt_to, r.state) for t, r in children.items()} == {
        "corp": (["alice@corp.example"], "delivered"),
        "partner": (["carol@partner.example"], "delivered")}
    assert "carol" not in repr(children["corp"])
