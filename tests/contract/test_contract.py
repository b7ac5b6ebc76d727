"""The same scenarios through both runtimes: each asserts one final state, the log fields, the
copies per recipient and the DSNs, whichever runtime carried the message (DESIGN §1, §7)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import pyzipper

from mailmoat.config import GatewayConfig
from mailmoat.ports import DeliveryError
from mailmoat.stages.isolate import NOTICE
from tests.contract.harness import LISTED_IP, SENDER, Gateway, World, incoming

# Two tenants, each with its own language (the notice it gets) and users.
ALPHA: dict[str, Any] = {
    "name": "alpha", "domains": ["alpha.example"], "language": "en",
    "users": [{"address": "alice@alpha.example"}, {"address": "bob@alpha.example"}]}
BETA: dict[str, Any] = {
    "name": "beta", "domains": ["beta.example"], "language": "ja",
    "users": [{"address": "carol@beta.example"}]}
ALICE, BOB, CAROL = "alice@alpha.example", "bob@alpha.example", "carol@beta.example"

MakeGateway = Callable[[World], Gateway]


def world(*tenants: dict[str, Any], **settings: object) -> World:
    return World(GatewayConfig.model_validate({"tenant": list(tenants)}), dict(settings))


def encrypted_zip() -> tuple[str, bytes]:
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(b"secret")
        archive.writestr("figures.xlsx", b"PK not really a workbook")
    return "figures.zip", buffer.getvalue()


def send(gw: Gateway, rcpts: list[str], attachment: tuple[str, bytes] | None = None) -> str:
    """A message to `rcpts`, received and run through every stage."""
    message_id = gw.receive(incoming(rcpts, attachment=attachment), rcpts)
    gw.run()
    return message_id


def test_a_clean_message_is_delivered_once(gateway: MakeGateway) -> None:
    gw = gateway(world(ALPHA))
    message_id = send(gw, [ALICE])
    row = gw.record(message_id)
    assert (row.state, row.disposition, row.error, row.tenant) == ("delivered", "deliver", None, "alpha")
    assert row.report is not None and row.report["deliveries"][ALICE].startswith("delivered")
    assert gw.deliveries() == [(message_id, ALICE)]
    assert gw.dsns() == []


def test_an_encrypted_zip_is_isolated_behind_the_portal_notice(gateway: MakeGateway) -> None:
    gw = gateway(world(ALPHA))
    message_id = send(gw, [ALICE], attachment=encrypted_zip())
    row = gw.record(message_id)
    assert (row.state, row.disposition, row.error) == ("delivered", "deliver", None)
    assert row.report is not None
    [attachment] = row.report["attachments"]
    assert (attachment["verdict"], attachment["action"]) == ("encrypted", "isolate")
    assert row.report["portal_url"].endswith("/m/<redacted>")  # the token is in the copy only
    [copy] = gw.outbox.sent
    assert (copy.message_id, copy.recipient) == (message_id, ALICE)
    assert NOTICE["en"]["title"] in copy.text() and "https://portal.example.net/m/" in copy.text()
    assert b"figures.zip" not in copy.data
    assert gw.dsns() == []


def test_spam_for_a_quarantining_tenant_is_held_not_delivered(gateway: MakeGateway) -> None:
    gw = gateway(world({**ALPHA, "spam_action": "quarantine"}))
    message_id = gw.receive(incoming([ALICE]), [ALICE], client_ip=LISTED_IP)
    gw.run()
    row = gw.record(message_id)
    # Spam quarantine is per recipient, at delivery: the row keeps the disposition the message
    # went on with, the report the final one (every copy held).
    assert (row.state, row.disposition, row.error) == ("quarantined", "deliver", None)
    assert row.report is not None and row.report["disposition"] == "quarantine"
    assert (row.report["spam"]["verdict"], row.report["spam"]["sources"]) == ("spam", ["dnsbl:bl.test"])
    assert row.report["deliveries"] == {ALICE: "quarantined: spam"}
    assert gw.deliveries() == []
    assert gw.dsns() == []  # never a notice for spam


@pytest.mark.parametrize(("refusal", "error", "status"), [
    # Deferred on every attempt: failed when delivery_max_attempts (3) are used up.
    (DeliveryError("451 4.3.0 mailbox busy", permanent=False, code=451),
     "delivery retries exhausted", "4.4.7"),
    # Refused for good at the first attempt.
    (DeliveryError("550 5.1.1 user unknown", permanent=True, code=550),
     "failed: 550 5.1.1 user unknown", "5.1.1"),
])
def test_a_refused_delivery_fails_with_one_dsn(gateway: MakeGateway, refusal: DeliveryError,
                                               error: str, status: str) -> None:
    gw = gateway(world(ALPHA))
    asked: list[str] = []

    def host(rcpt: str) -> DeliveryError:
        asked.append(rcpt)
        return refusal

    gw.outbox.refuse = host
    message_id = send(gw, [ALICE])
    assert len(asked) == (1 if refusal.permanent else 3)  # delivery_max_attempts
    row = gw.record(message_id)
    assert (row.state, row.disposition, row.error) == ("failed", "deliver", error)
    assert row.report is not None and row.report["deliveries"][ALICE] == (
        ("deferred: " if status.startswith("4") else "failed: ") + str(refusal))
    assert gw.deliveries() == []
    assert gw.dsns() == [(message_id, SENDER)]
    assert f"Status: {status}".encode() in gw.notices.sent[0].data


def test_a_crashing_stage_is_retried_then_held_and_a_redrive_delivers_once(
        gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailmoat.stages import scan

    gw = gateway(world(ALPHA))
    crashes: list[str] = []

    def broken(self: scan.Scan, ctx: object, services: object) -> None:
        crashes.append("scan")
        raise RuntimeError("scanner crashed")

    with monkeypatch.context() as patch:
        patch.setattr(scan.Scan, "run", broken)
        message_id = send(gw, [ALICE])
    row = gw.record(message_id)
    assert len(crashes) == 3  # stage_max_attempts
    assert (row.state, row.disposition, row.error) == ("held", "held", "stage scan failed")
    assert gw.deliveries() == []

    gw.redrive(message_id)  # the scanner is fixed
    row = gw.record(message_id)
    assert (row.state, row.disposition, row.error) == ("delivered", "deliver", None)
    assert gw.deliveries() == [(message_id, ALICE)]
    assert gw.dsns() == []


def test_a_cross_tenant_envelope_becomes_one_message_per_tenant(gateway: MakeGateway) -> None:
    gw = gateway(world(ALPHA, BETA))
    message_id = send(gw, [ALICE, CAROL, BOB], attachment=encrypted_zip())
    parent = gw.record(message_id)
    assert parent.state == "split"
    assert parent.error == f"one message per tenant: {message_id}.1, {message_id}.2"
    children = {c: gw.record(f"{message_id}.{n}") for n, c in ((1, "alpha"), (2, "beta"))}
    assert {t: (r.state, r.tenant, r.rcpt_to) for t, r in children.items()} == {
        "alpha": ("delivered", "alpha", [ALICE, BOB]), "beta": ("delivered", "beta", [CAROL])}
    assert {t: (r.report or {})["deliveries"].keys() for t, r in children.items()} == {
        "alpha": {ALICE, BOB}, "beta": {CAROL}}
    assert sorted(gw.deliveries()) == [(f"{message_id}.1", ALICE), (f"{message_id}.1", BOB),
                                      (f"{message_id}.2", CAROL)]
    for copy in gw.outbox.sent:  # each tenant's notice in its own language
        language = "en" if copy.recipient.endswith("@alpha.example") else "ja"
        assert NOTICE[language]["title"] in copy.text()
    assert gw.dsns() == []


# On AWS a stored message of several recipients comes with no envelope: the stack's only ingress
# event is the S3 notification of SES's S3 action (template.yaml ReceiptRule, RawMailBucket), and
# SES's Received header names a recipient only when there is one. stored_envelope then takes the
# registered addresses in To / Cc, which are not the envelope.
ENVELOPE_LOST = pytest.mark.xfail(strict=True, reason=(
    "Mail Manager ingress (the AWS default, which this harness models: an S3 notification) "
    "stores no envelope for several recipients: the runner takes To/Cc, so a Bcc recipient "
    "gets nothing and a To-only address gets a copy. Ingress=receipt-rules has the envelope "
    "from SES's notification (tests/handlers: test_an_ses_notification_through_sns_...); "
    "Mail Manager documents no way to get it (docs/aws-limits.md §2)"))


@pytest.mark.parametrize("kind", ["local", pytest.param("aws", marks=ENVELOPE_LOST)], indirect=True)
@pytest.mark.parametrize(("to", "envelope"), [
    ([ALICE], [ALICE, CAROL]),  # carol is a Bcc recipient
    ([ALICE, BOB, CAROL], [ALICE, CAROL]),  # bob is named in To, but not a recipient of this one
])
def test_the_envelope_not_the_headers_says_who_gets_a_copy(gateway: MakeGateway, to: list[str],
                                                           envelope: list[str]) -> None:
    gw = gateway(world(ALPHA, BETA))
    message_id = gw.receive(incoming(to), envelope)
    gw.run()
    assert gw.record(message_id).state == "split"
    assert sorted(gw.deliveries()) == [(f"{message_id}.1", ALICE), (f"{message_id}.2", CAROL)]


def test_redriving_a_held_message_delivers_once_never_twice(
        gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailmoat.stages import deliver

    def crash(ctx: object, services: object) -> None:
        raise RuntimeError("killed after the copies went out")

    gw = gateway(world(ALPHA))
    with monkeypatch.context() as patch:
        patch.setattr(deliver, "retain_copies", crash)
        message_id = send(gw, [ALICE, BOB])
    row = gw.record(message_id)
    assert (row.state, row.disposition, row.error) == ("held", "held", "stage deliver failed")
    assert sorted(gw.deliveries()) == [(message_id, ALICE), (message_id, BOB)]

    for _ in range(2):  # the admin redrives it, then once more
        gw.redrive(message_id)
        row = gw.record(message_id)
        assert (row.state, row.disposition, row.error) == ("delivered", "deliver", None)
        assert sorted(gw.deliveries()) == [(message_id, ALICE), (message_id, BOB)]
    assert gw.dsns() == []
