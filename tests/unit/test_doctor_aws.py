"""The doctor on the AWS runtime, on moto: tenants from the directory table, the ARC key from
the secret the rewrite function reads, a tenant's Mail Manager delivery host probed on loopback,
MX against the stack's ingress endpoint; what lives in the images is SKIP, never faked."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.dns import ZoneFileResolver
from mailmoat.adapters.http_probe import HttpClientProbe
from mailmoat.adapters.smtp_probe import SmtplibTlsProbe
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.doctor import Result, Status
from mailmoat.doctor.cli import aws_deployment
from mailmoat.doctor.diagnose import diagnose
from mailmoat.rewrite.seal import ensure_local_key
from mailmoat.settings import Settings
from tests.unit.doctor_servers import DoctorCa, http_server, smtp_server

NOW = datetime.datetime.now(datetime.UTC)
INGRESS = "abc123.mail-manager-smtp.amazonaws.com"  # the stack's MxTarget output


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("dynamodb").create_table(
            TableName="directory", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}])
        monkeypatch.setenv("MAILMOAT_DIRECTORY_TABLE", "directory")
        monkeypatch.setenv("MAILMOAT_RELAY_IDENTITY", "relay.corp.test")  # the seal's d=
        yield {"secrets": boto3.client("secretsmanager")}


def run(tmp_path: Path, ca: DoctorCa, zone: dict[str, Any], gateway: list[str] | None) -> list[Result]:
    settings = Settings(runtime="aws", data_dir=tmp_path / "var")
    dns = ZoneFileResolver(zone)
    deployment = aws_deployment(settings, gateway, dns)
    return diagnose(deployment, resolver=dns,
                    tls=SmtplibTlsProbe(helo="gw.test", timeout=5, context=ca.client_context()),
                    http=HttpClientProbe(timeout=5, context=ca.client_context()),
                    clamd_version=lambda: pytest.fail("clamd is not asked on AWS"),
                    magic_problem=lambda: pytest.fail("libmagic is not asked on AWS"), now=NOW)


def by_name(results: list[Result]) -> dict[str, list[Status]]:
    found: dict[str, list[Status]] = {}
    for r in results:
        found.setdefault(r.name, []).append(r.status)
    return found


def test_the_stack_with_its_secret_and_directory_table(tmp_path: Path, aws: dict[str, Any]) -> None:
    from mailmoat.adapters.aws_dynamodb import DynamoDirectory

    ca = DoctorCa(tmp_path)
    key = ensure_local_key(tmp_path / "arc", "mailmoat", "relay.corp.test")
    arn = aws["secrets"].create_secret(Name="arc", SecretString=key.private_pem.decode())["ARN"]
    with smtp_server(ca.issue("exo", days=60)) as port, \
            http_server(200, ca.issue("api", days=60)) as portal, \
            pytest.MonkeyPatch.context() as env:
        env.setenv("MAILMOAT_ARC_KEY_SECRET_ARN", arn)
        env.setenv("MAILMOAT_PORTAL_BASE_URL", portal)
        DynamoDirectory("directory").put_tenant_config(TenantConfig(
            name="corp", domains=["corp.test"],
            delivery=DeliveryConfig(mode="mailmanager", host="127.0.0.1", port=port)))
        zone = {"corp.test": {"MX": [f"10 {INGRESS}"]}, INGRESS: {"A": ["203.0.113.9"]},
                "mailmoat._domainkey.relay.corp.test": {"TXT": [key.txt_value.decode()]}}
        results = run(tmp_path, ca, zone, [INGRESS])
        # Mail Manager's MX target is the stack's output: without it the MX cannot be judged.
        unknown = run(tmp_path, ca, zone, None)
    assert by_name(results) == {
        "mx": [Status.OK], "arc-key": [Status.OK], "clamd": [Status.SKIP],
        "libmagic": [Status.SKIP], "delivery": [Status.OK], "certificate": [Status.OK, Status.OK, Status.SKIP],
        "portal": [Status.OK], "disk": [Status.SKIP]}, results
    assert by_name(unknown)["mx"] == [Status.WARN]


def test_a_missing_secret_and_an_unreadable_table_fail(tmp_path: Path, aws: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILMOAT_ARC_KEY_SECRET_ARN",
                       "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf")
    monkeypatch.setenv("MAILMOAT_DIRECTORY_TABLE", "no-such-table")
    results = run(tmp_path, DoctorCa(tmp_path), {}, [INGRESS])
    failed = {r.name: r for r in results if r.status is Status.FAIL}
    assert "cannot read the ARC key secret" in failed["arc-key"].detail
    assert "cannot read the tenants" in failed["config"].detail
    assert "portal" in failed  # no MAILMOAT_PORTAL_BASE_URL
