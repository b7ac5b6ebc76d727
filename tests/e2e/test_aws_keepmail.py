"""Keep-mail on AWS, on moto through the real handlers and the portal app: with the stack's
KeepMailTable the deliver stage keeps each recipient's copy (raw keep/…, a row in the table) and
the recipient reads it at /k/ after a password or an e-mailed code (sent through SES as the
postmaster). Without the table the runtime says so instead of failing silently: the finding
KEEPMAIL_UNAVAILABLE on every message, and /k/ answers with a plain explanation."""

from __future__ import annotations

import email
import re
from email import policy

import boto3
import pytest
from fastapi.testclient import TestClient

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.bootstrap import aws as entry
from mailmoat.config import DeliveryConfig, TenantConfig
from tests.e2e.test_aws_pipeline import (  # noqa: F401  (stack is a fixture)
    RAW_BUCKET,
    REGION,
    Stack,
    incoming,
    run_all,
    sent_messages,
    stack,
    template_resources,
)
from tests.webforms import form_csrf

ALICE = "alice@corp.example"


def keepmail_tenant() -> None:
    DynamoDirectory("directory").put_tenant_config(TenantConfig(  # type: ignore[call-arg]
        name="corp", domains=["corp.example"], language="en", keepmail_days=7,
        delivery=DeliveryConfig(mode="ses", routing_domain="corp.onmicrosoft.com")))
    entry.aws_runtime.cache_clear()


def portal() -> TestClient:
    from mailmoat.bootstrap import bootstrap
    from mailmoat_web.app import create_app

    return TestClient(create_app(bootstrap(), sweep_every=None), base_url="https://portal.example.net")


@pytest.fixture
def keep_stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:  # noqa: F811 (the fixture)
    props = template_resources()["KeepMailTable"]["Properties"]
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName="keep", BillingMode=props["BillingMode"],
        AttributeDefinitions=props["AttributeDefinitions"], KeySchema=props["KeySchema"])
    monkeypatch.setenv("MAILMOAT_KEEPMAIL_TABLE", "keep")
    keepmail_tenant()
    return stack


def test_keepmail_on_aws_keeps_the_copy_and_shows_it_after_sign_in(keep_stack: Stack) -> None:
    from mailmoat.keepmail import set_password

    keep_stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-keep-0002", Body=incoming(subject="Quarterly"))
    run_all(keep_stack)
    [delivered] = sent_messages()
    services = entry.aws_runtime().runtime.services
    store = services.keepmail
    assert store is not None
    kept = store.get("ses-keep-0002", ALICE)
    assert kept is not None and kept.outcome.startswith("delivered") and kept.blob_key.startswith("keep/")
    copy = keep_stack.s3.get_object(Bucket=RAW_BUCKET, Key=kept.blob_key)["Body"].read()
    assert b"Quarterly" in copy
    record = DynamoMessageLog("messages").get("ses-keep-0002")
    assert record is not None and "keepmail" in record.report["actions"]

    client = portal()
    set_password(store, ALICE, "correct horse battery staple")
    signin_page = client.get("/k/")
    signed_in = client.post("/k/signin", data={"csrf": form_csrf(signin_page.text), "address": ALICE,
                                               "password": "correct horse battery staple"},
                            follow_redirects=False)
    assert signed_in.status_code == 303
    assert "Quarterly" in client.get("/k/inbox").text
    assert client.get("/k/m/ses-keep-0002").status_code == 200

    # The e-mailed code goes out through SES as the postmaster, to the alternate address as is.
    store.set_alternate(ALICE, "alice.home@alt.example")
    other = portal()
    other_page = other.get("/k/")
    asked = other.post("/k/code", data={"csrf": form_csrf(other_page.text), "address": ALICE})
    assert asked.status_code == 200
    code_mail = sent_messages()[-1]
    assert code_mail is not delivered
    assert code_mail.source == "postmaster@relay.example.net"
    assert code_mail.destinations[0] == "alice.home@alt.example"
    body = email.message_from_string(code_mail.raw_data, policy=policy.default)
    code = re.findall(r"\b\d{8}\b", body.get_body(("plain",)).get_content())[0]  # type: ignore[union-attr]
    verified = other.post("/k/code/verify", data={"csrf": form_csrf(asked.text), "address": ALICE,
                                                  "code": code}, follow_redirects=False)
    assert verified.status_code == 303 and "Quarterly" in other.get("/k/inbox").text


def test_keepmail_without_the_table_refuses_clearly(stack: Stack) -> None:  # noqa: F811 (the fixture)
    keepmail_tenant()
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-keep-0001", Body=incoming())
    run_all(stack)
    assert len(sent_messages()) == 1  # delivery itself is unaffected
    record = DynamoMessageLog("messages").get("ses-keep-0001")
    assert record is not None and record.state == "delivered"
    assert "KEEPMAIL_UNAVAILABLE" in {f["symbol"] for f in record.report["findings"]}

    page = portal().get("/k/?lang=en")
    assert page.status_code == 501 and "Keep-mail is not available here" in page.text
