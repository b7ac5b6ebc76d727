"""S3BlobStore on moto: the blob store contract, SSE on every write, routing, presigned GETs."""

import urllib.parse

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from mailmoat.adapters.aws_s3 import S3BlobStore
from tests.conftest import use_aws_test_credentials


@pytest.fixture
def s3(monkeypatch):
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1",
                              config=Config(signature_version="s3v4"))
        client.create_bucket(Bucket="raw")
        client.create_bucket(Bucket="quarantine")
        yield client


def test_round_trip_with_sse_and_missing_keys(s3):
    store = S3BlobStore("raw", client=s3)
    store.put("work/m1/state.json", b"{}")
    assert store.get("work/m1/state.json") == b"{}"
    assert store.exists("work/m1/state.json")
    assert s3.head_object(Bucket="raw", Key="work/m1/state.json")["ServerSideEncryption"] == "AES256"
    assert list(store.keys("work/")) == ["work/m1/state.json"]
    store.delete("work/m1/state.json")
    assert not store.exists("work/m1/state.json")
    with pytest.raises(FileNotFoundError):
        store.get("work/m1/state.json")


def test_isolated_files_are_routed_to_the_quarantine_bucket(s3):
    store = S3BlobStore("raw", routes={"isolated/": "quarantine"}, client=s3)
    store.put("isolated/m1/2", b"zip bytes")
    assert s3.get_object(Bucket="quarantine", Key="isolated/m1/2")["Body"].read() == b"zip bytes"
    assert "Contents" not in s3.list_objects_v2(Bucket="raw")
    assert list(store.keys("isolated/")) == ["isolated/m1/2"]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "raw/../x", "raw/./x", "a\x00b"])
def test_bad_keys_are_refused(s3, key):
    with pytest.raises(ValueError):
        S3BlobStore("raw", client=s3).put(key, b"x")


def test_presigned_get_names_the_quarantine_object_and_the_file(s3):
    store = S3BlobStore("raw", routes={"isolated/": "quarantine"}, client=s3)
    store.put("isolated/m1/2", b"data")
    url = store.presigned_get("isolated/m1/2", expires_in=120, filename="請求書.zip")
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    assert "quarantine" in parsed.netloc + parsed.path and parsed.path.endswith("/isolated/m1/2")
    assert query["X-Amz-Expires"] == ["120"]
    assert query["response-content-disposition"] == [
        "attachment; filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8.zip"]
    response = requests.get(url, timeout=5)  # answered by moto, not the network
    assert response.status_code == 200 and response.content == b"data"


@pytest.mark.parametrize(("code", "status", "missing"), [
    ("NoSuchKey", 404, True),  # the role may list the bucket: S3 says the key is not there
    ("AccessDenied", 403, False),  # it may not (or is denied): never taken for a missing object
])
def test_only_a_404_is_a_missing_object(code, status, missing):
    """S3 answers 403, not 404, for a missing key to a caller without s3:ListBucket (GetObject
    API reference); moto always says 404. A 403 must stay an error, or a denied read would
    look like a lost state (rebuilt) or a lost message (held) — the template grants the stage
    roles ListBucket so that a missing object really is a 404."""
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    store = S3BlobStore("raw-bucket", client=client)
    with Stubber(client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        if missing:
            with pytest.raises(FileNotFoundError):
                store.get("work/m/scan/state.json")
        else:
            with pytest.raises(ClientError) as raised:
                store.get("work/m/scan/state.json")
            assert not isinstance(raised.value, FileNotFoundError)
