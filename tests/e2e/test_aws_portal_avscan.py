"""PPAP on AWS (issue 14): the portal function has no clamd, so what a password opens is shown as
"being checked" while the AvScan function (the scan image) scans it; then a clean member is
offered and downloads byte for byte, an infected one never is. Through the real portal handler
(web/app.py) and the real functions/avscan/app.py, on moto."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
from typing import Any

import pytest

from mailmoat.bootstrap import aws as entry
from mailmoat.context import Verdict
from mailmoat.production import ProductionRefused
from mailmoat.scan.engine import CACHE
from mailmoat.settings import AwsSettings
from tests.e2e import test_aws_pipeline
from tests.e2e.test_aws_pipeline import (
    QUARANTINE_BUCKET,
    REGION,
    ROOT,
    FakeContext,
    Stack,
    template_resources,
)
from tests.e2e.test_aws_portal_downloads import MESSAGE_ID, Lambda, isolated, portal_token
from tests.handlers.test_handlers import load_handler
from tests.unit.isolation.builders import EICAR_LIKE, PASSWORD, SignatureAntivirus, aes_zip

stack = test_aws_pipeline.stack  # the moto stack of the end-to-end tests, as a fixture here too
MEMBER = re.compile(r'<li class="member verdict-(\w+)">\s*<span class="name">([^<]+)</span>\s*'
                    r'<span class="badge badge-\w+">([^<]+)</span>')
MEMBERS = {"見積書.txt": b"quotation\n", "eicar.com": EICAR_LIKE}
AVSCAN_PREFIX = "isolated/avscan/"  # literal: the quarantine lifecycle rule names it too


@pytest.fixture
def avscan_queue(stack: Stack) -> str:
    """AvScanQueue as the template declares it, named in the portal's environment."""
    props = template_resources()["AvScanQueue"]["Properties"]
    url: str = stack.sqs.create_queue(QueueName="AvScanQueue", Attributes={  # type: ignore[attr-defined]
        "VisibilityTimeout": str(props["VisibilityTimeout"])})["QueueUrl"]
    stack.monkeypatch.setenv("MAILMOAT_AVSCAN_QUEUE_URL", url)
    return url


def portal_without_antivirus() -> Lambda:
    entry.aws_runtime.cache_clear()
    CACHE.clear()
    web = Lambda(load_handler("web/app.py"))
    assert web.services.antivirus is None  # as on AWS: the portal function has no clamd
    return web


def avscan_function() -> Any:
    """functions/avscan/app.py as its Lambda loads it; the tests' antivirus where clamd would be."""
    entry.aws_runtime.cache_clear()
    spec = importlib.util.spec_from_file_location("app_avscan", ROOT / "functions/avscan/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.runtime.avscans.antivirus = SignatureAntivirus()
    return module


def drain(stack: Stack, url: str, handler: Any) -> list[dict[str, Any]]:
    """What the SQS event source does: the queued messages to the handler, the done ones deleted."""
    received = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,  # type: ignore[attr-defined]
                                         VisibilityTimeout=0).get("Messages", [])
    if not received:
        return []
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {}, "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:AvScanQueue",
        "awsRegion": REGION} for m in received]}
    result = handler(event, FakeContext())
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    for m in received:
        if m["MessageId"] not in failed:
            stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])  # type: ignore[attr-defined]
    return received


def avscan_keys(stack: Stack) -> set[str]:
    listed = stack.s3.list_objects_v2(Bucket=QUARANTINE_BUCKET, Prefix=AVSCAN_PREFIX)  # type: ignore[attr-defined]
    return {o["Key"] for o in listed.get("Contents", [])}


def test_ppap_members_are_checked_by_the_avscan_function_then_offered(
        stack: Stack, avscan_queue: str) -> None:
    web = portal_without_antivirus()
    zipped = aes_zip(MEMBERS)
    token = portal_token(web, [isolated("1", "見積書.zip", zipped, Verdict.ENCRYPTED, "application/zip",
                                        ["ENCRYPTED_ARCHIVE"])])

    # 1. Unlocked: both members "being checked", no download, a button to check again.
    page = web.post(f"/m/{token}/f/1/unlock", password=PASSWORD)
    assert page["statusCode"] == 200
    assert MEMBER.findall(page["body"]) == [("unsupported", "見積書.txt", "Being checked"),
                                            ("unsupported", "eicar.com", "Being checked")]
    unlocked = page["body"].split('<div class="unlocked">', 1)[1]
    assert '/member"' not in unlocked and 'class="recheck"' in unlocked
    assert "<script" not in page["body"]
    for index in (0, 1):
        refused = web.post(f"/m/{token}/f/1/member", password=PASSWORD, index=str(index), confirm="1")
        assert refused["statusCode"] == 403
    shas = {hashlib.sha256(data).hexdigest() for data in MEMBERS.values()}
    assert avscan_keys(stack) == {AVSCAN_PREFIX + sha for sha in shas}

    # 2. The AvScan function takes the queued requests (one unlock and two refused downloads
    # asked for each member: the repeats find their bytes scanned and deleted already).
    avscan = avscan_function()
    received = drain(stack, avscan_queue, avscan.handler)
    assert {json.loads(m["Body"])["avscan"] for m in received} == shas
    assert avscan_keys(stack) == set()  # scanned, then deleted
    assert drain(stack, avscan_queue, avscan.handler) == []

    # 3. Checked: the clean member downloads byte for byte, the infected one is danger.
    web.sizes.clear()
    page = web.post(f"/m/{token}/f/1/unlock", password=PASSWORD)
    assert [(v, n) for v, n, _label in MEMBER.findall(page["body"])] == [
        ("safe", "見積書.txt"), ("danger", "eicar.com")]
    assert 'class="recheck"' not in page["body"]
    got = web.post(f"/m/{token}/f/1/member", password=PASSWORD, index="0", confirm="1")
    assert got["statusCode"] == 200 and "location" not in got["headers"]
    body = base64.b64decode(got["body"]) if got["isBase64Encoded"] else got["body"].encode()
    assert body == MEMBERS["見積書.txt"]
    infected = web.post(f"/m/{token}/f/1/member", password=PASSWORD, index="1", confirm="1")
    assert infected["statusCode"] == 403 and "MAILMOAT-TEST-SIGNATURE" not in infected["body"]
    assert stack.sqs.receive_message(QueueUrl=avscan_queue).get("Messages") is None  # type: ignore[attr-defined]
    isolation = web.services.isolation
    assert isolation is not None
    assert [d.kind for d in isolation.downloads(MESSAGE_ID)] == ["member:見積書.txt"]


def test_in_japanese_the_page_says_being_checked(stack: Stack, avscan_queue: str) -> None:
    web = portal_without_antivirus()
    token = portal_token(web, [isolated("1", "見積書.zip", aes_zip(MEMBERS), Verdict.ENCRYPTED,
                                        "application/zip", ["ENCRYPTED_ARCHIVE"])])
    web.cookies["mm_lang"] = "ja"
    body = web.post(f"/m/{token}/f/1/unlock", password=PASSWORD)["body"]
    assert [label for _v, _n, label in MEMBER.findall(body)] == ["検査中", "検査中"]
    assert "ウイルス検査中です" in body and "もう一度確認" in body


def test_without_the_avscan_queue_the_portal_holds_as_before(stack: Stack) -> None:
    web = portal_without_antivirus()
    token = portal_token(web, [isolated("1", "見積書.zip", aes_zip(MEMBERS), Verdict.ENCRYPTED,
                                        "application/zip", ["ENCRYPTED_ARCHIVE"])])
    body = web.post(f"/m/{token}/f/1/unlock", password=PASSWORD)["body"]
    assert [label for _v, _n, label in MEMBER.findall(body)] == ["Cannot be checked"] * 2
    assert "still to be checked for viruses" in body and 'class="recheck"' not in body
    assert avscan_keys(stack) == set()


def test_in_production_the_avscan_function_refuses_to_run_without_clamd(stack: Stack) -> None:
    settings = AwsSettings(mode="production", raw_bucket="raw", quarantine_bucket=QUARANTINE_BUCKET,
                           isolated_files_table="isolated", clamd_socket=None, clamd_config="")
    with pytest.raises(ProductionRefused, match="no reachable antivirus"):
        entry.LambdaEntry(settings).avscans  # building it is the check
