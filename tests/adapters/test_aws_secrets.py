"""The ARC key from Secrets Manager: fetched once, written 0600."""

import stat

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters import aws_secrets
from tests.conftest import use_aws_test_credentials

PEM = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def secrets(monkeypatch):
    use_aws_test_credentials(monkeypatch)
    monkeypatch.setattr(aws_secrets, "_written", {})
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_key_written_once_with_private_mode(secrets, tmp_path):
    arn = secrets.create_secret(Name="arc", SecretString=PEM)["ARN"]
    path = aws_secrets.arc_key_file(arn, client=secrets, directory=tmp_path)
    assert path.read_text() == PEM
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secrets.put_secret_value(SecretId=arn, SecretString=PEM.replace("MIIB", "XXXX"))
    assert aws_secrets.arc_key_file(arn, client=secrets, directory=tmp_path) == path
    assert path.read_text() == PEM  # once per cold start


def test_a_secret_without_a_key_is_refused(secrets, tmp_path):
    arn = secrets.create_secret(Name="arc", SecretString="hunter2")["ARN"]
    with pytest.raises(ValueError):
        aws_secrets.arc_key_file(arn, client=secrets, directory=tmp_path)
