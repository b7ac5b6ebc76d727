"""The antivirus verdict rows on the isolated-files table and the scan requests (S3 + SQS), on moto,
with the table's key schema and TTL attribute as template.yaml declares them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml
from moto import mock_aws

from mailmoat.adapters.aws_avscan import DynamoAntivirusVerdicts, SqsAntivirusRequests
from mailmoat.adapters.aws_s3 import S3BlobStore
from mailmoat.ports import AntivirusVerdict
from tests.conftest import use_aws_test_credentials

ROOT = Path(__file__).resolve().parents[2]
DATA = b"decrypted member\n"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    use_aws_test_credentials(monkeypatch)
    table = cfn_yaml.load(str(ROOT / "template.yaml"))["Resources"]["IsolatedFilesTable"]["Properties"]
    with mock_aws():
        ddb = boto3.client("dynamodb")
        ddb.create_table(TableName="isolated", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=list(table["AttributeDefinitions"]),
                         KeySchema=list(table["KeySchema"]))
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="raw")
        s3.create_bucket(Bucket="quarantine")
        url = boto3.client("sqs").create_queue(QueueName="AvScanQueue")["QueueUrl"]
        yield {"ttl": table["TimeToLiveSpecification"]["AttributeName"], "s3": s3, "url": url,
               "table": boto3.resource("dynamodb").Table("isolated")}


@pytest.mark.parametrize("verdict", [
    AntivirusVerdict("clean", datetime(2026, 12, 2, 9, 0, tzinfo=UTC)),
    AntivirusVerdict("infected", datetime(2026, 12, 2, 9, 0, tzinfo=UTC), signature="Eicar-Signature"),
    AntivirusVerdict("failed", datetime(2026, 12, 2, 9, 0, tzinfo=UTC), detail="clamd down"),
], ids=lambda v: v.outcome)
def test_a_verdict_comes_back_as_it_was_put_with_the_tables_ttl(
        aws: dict[str, Any], verdict: AntivirusVerdict) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    verdict = AntivirusVerdict(verdict.outcome, now, verdict.signature, verdict.detail)
    store = DynamoAntivirusVerdicts("isolated", retention_days=30)
    assert store.get(SHA) is None
    store.put(SHA, verdict)
    assert store.get(SHA) == verdict
    item = aws["table"].get_item(Key={"token": f"AVSCAN#{SHA}"})["Item"]
    assert int(item[aws["ttl"]]) == int((now + timedelta(days=30)).timestamp())


def test_an_expired_verdict_is_none_before_ttl_removes_it(aws: dict[str, Any]) -> None:
    store = DynamoAntivirusVerdicts("isolated", retention_days=1)
    store.put(SHA, AntivirusVerdict("clean", datetime.now(UTC) - timedelta(days=2)))
    assert store.get(SHA) is None


def test_a_request_leaves_the_bytes_in_quarantine_then_names_them_on_the_queue(
        aws: dict[str, Any]) -> None:
    blobs = S3BlobStore("raw", routes={"isolated/": "quarantine"})
    SqsAntivirusRequests(blobs, aws["url"]).request(SHA, DATA)
    body = aws["s3"].get_object(Bucket="quarantine", Key=f"isolated/avscan/{SHA}")["Body"].read()
    assert body == DATA
    [sent] = boto3.client("sqs").receive_message(QueueUrl=aws["url"])["Messages"]
    assert json.loads(sent["Body"]) == {"avscan": SHA}


def test_a_request_under_a_name_that_is_not_a_sha256_is_refused(aws: dict[str, Any]) -> None:
    blobs = S3BlobStore("raw", routes={"isolated/": "quarantine"})
    with pytest.raises(ValueError):
        SqsAntivirusRequests(blobs, aws["url"]).request("../downloads/x", DATA)
    assert "Messages" not in boto3.client("sqs").receive_message(QueueUrl=aws["url"])
