"""Keep-mail on AWS is not built (docs/archive-keepmail.md): the stack says so instead of failing
silently. A tenant asking for copies gets KEEPMAIL_UNAVAILABLE on every message, and /k/ answers
with a plain explanation rather than a sign-in form whose every answer would be a 404."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mailmoat.adapters.aws_dynamodb import DynamoDirectory, DynamoMessageLog
from mailmoat.aws import entry
from mailmoat.config import DeliveryConfig, TenantConfig
from tests.e2e.test_aws_pipeline import (  # noqa: F401  (stack is a fixture)
    RAW_BUCKET,
    Stack,
    incoming,
    run_all,
    sent_messages,
    stack,
)


def test_keepmail_on_aws_refuses_clearly(stack: Stack) -> None:  # noqa: F811 (the fixture)
    DynamoDirectory("directory").put_tenant_config(TenantConfig(  # type: ignore[call-arg]
        name="corp", domains=["corp.example"], language="en", keepmail_days=7,
        delivery=DeliveryConfig(mode="ses", routing_domain="corp.onmicrosoft.com")))
    entry.aws_runtime.cache_clear()
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-keep-0001", Body=incoming())
    run_all(stack)
    assert len(sent_messages()) == 1  # delivery itself is unaffected
    record = DynamoMessageLog("messages").get("ses-keep-0001")
    assert record is not None and record.state == "delivered"
    assert "KEEPMAIL_UNAVAILABLE" in {f["symbol"] for f in record.report["findings"]}

    from mailmoat.runtime import bootstrap
    from mailmoat_web.app import create_app

    client = TestClient(create_app(bootstrap(), sweep_every=None), base_url="https://portal.example.net")
    page = client.get("/k/?lang=en")
    assert page.status_code == 501 and "Keep-mail is not available here" in page.text
