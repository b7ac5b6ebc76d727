"""The retro-hunt function (functions/retrohunt/app.py) on moto: a new rule turns a held file
danger in the isolated-files table, its quarantined bytes go, the notices leave through SES, and
the next scheduled run with the same signature state does nothing."""

from __future__ import annotations

import email
import hashlib
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_isolation import DynamoIsolationStore
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.context import Verdict
from mailmoat.isolation import DownloadRecord, IsolatedFile, PortalMessage
from mailmoat.scan import yara_rules
from tests.e2e.test_aws_pipeline import (  # noqa: F401  (stack is a fixture)
    QUARANTINE_BUCKET,
    FakeContext,
    Stack,
    sent_messages,
    stack,
)

SCRIPT = b"WScript.Echo('retro-hunt aws payload')"
RULE = 'rule retro_aws { meta: verdict = "danger" strings: $a = "retro-hunt aws payload" condition: $a }\n'


def test_the_retrohunt_function_stops_the_download_and_mails_the_notices(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    rules = tmp_path / "rules"
    rules.mkdir()
    monkeypatch.setenv("MAILMOAT_YARA_RULES_DIR", str(rules))
    monkeypatch.setenv("MAILMOAT_YARA_RELOAD_CHECK_SECONDS", "0")
    yara_rules.configure(None)
    DynamoDirectory("directory").put_tenant_config(TenantConfig(  # type: ignore[call-arg]
        name="corp", domains=["corp.example"], language="en",
        admin_notice_addresses=["security@corp.example"],
        delivery=DeliveryConfig(mode="ses", routing_domain="corp.onmicrosoft.com")))
    now = datetime.now(UTC)
    key = "isolated/m-aws/2"
    stack.s3.put_object(Bucket=QUARANTINE_BUCKET, Key=key, Body=SCRIPT)  # type: ignore[attr-defined]
    store = DynamoIsolationStore("isolated")
    store.save(PortalMessage(id="m-aws", tenant="corp", language="en", from_header=None,
                             subject=None, date=None, mail_from=None, route=[], created_at=now,
                             expires_at=now + timedelta(days=30)),
               [IsolatedFile(message_id="m-aws", path="2", filename="tool.js", size=len(SCRIPT),
                             sha256=hashlib.sha256(SCRIPT).hexdigest(),
                             declared_type="application/javascript", detected_type="text/plain",
                             verdict=Verdict.RISKY, symbols=["DANGEROUS_EXTENSION"],
                             action="isolate", expires_at=now + timedelta(days=30), blob_key=key)])
    store.record_download(DownloadRecord(now - timedelta(hours=2), "m-aws", "2", "original",
                                         "192.0.2.1", "alice@corp.example"))
    try:
        handler = stack.handler("retrohunt")
        first = handler({"source": "aws.events"}, FakeContext())
        assert first["ran"] and first["turned"] == []  # the state is new, nothing found yet
        (rules / "retro.yar").write_text(RULE)
        second = stack.handler("retrohunt")({"source": "aws.events"}, FakeContext())
        assert [t["filename"] for t in second["turned"]] == ["tool.js"]
        third = stack.handler("retrohunt")({"source": "aws.events"}, FakeContext())
        assert third["ran"] is False  # the same signature state: no run
    finally:
        yara_rules.configure(None)
    [record] = store.files("m-aws")
    assert record.verdict == Verdict.DANGER and record.blob_key is None
    listed = stack.s3.list_objects_v2(Bucket=QUARANTINE_BUCKET).get("Contents", [])  # type: ignore[attr-defined]
    assert key not in [o["Key"] for o in listed]
    sent = sent_messages()
    assert sorted(m.destinations[0] for m in sent) == ["alice@corp.onmicrosoft.com",
                                                     "security@corp.onmicrosoft.com"]
    body = email.message_from_string(sent[0].raw_data, policy=policy.default)
    text = "".join(str(p.get_content()) for p in body.walk() if p.get_content_type() == "text/plain")
    assert "tool.js" in text and "SANDBOX_YARA_DANGER" in text and "/m/" not in text
