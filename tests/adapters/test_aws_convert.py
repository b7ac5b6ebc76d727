"""The ConvertFunction adapter on moto S3 with a botocore Stubber for lambda:Invoke: the bytes go
through S3, the invoke payload carries only an id and a name (Lambda's synchronous payload limit
is 6 MB, docs/aws-limits.md), and every failure is a ConversionError (issue 16)."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from mailmoat.adapters.aws_convert import LambdaPdfConverter
from mailmoat.adapters.aws_s3 import S3BlobStore
from mailmoat.convert import ConversionError
from mailmoat.convert.remote import CONVERT_PREFIX, SYNC_PAYLOAD_LIMIT, handle
from tests.conftest import use_aws_test_credentials

REQUEST_ID = "0123456789abcdef0123456789abcdef"
PDF = b"%PDF-1.7\n% converted\n%%EOF\n"


class Converter:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.seen: list[tuple[int, str]] = []

    def convert(self, data: bytes, filename: str) -> bytes:
        self.seen.append((len(data), filename))
        if self.error is not None:
            raise self.error
        return PDF


@pytest.fixture
def blobs(monkeypatch) -> Any:
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="raw")
        s3.create_bucket(Bucket="quarantine")
        yield S3BlobStore("raw", routes={"isolated/": "quarantine"}, client=s3)


def _answer(body: dict[str, Any] | None, function_error: str | None = None) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    response: dict[str, Any] = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(raw), len(raw))}
    if function_error:
        response["FunctionError"] = function_error
    return response


def _adapter(blobs: Any, function: Converter | None, answer: dict[str, Any],
             filename: str) -> tuple[LambdaPdfConverter, Stubber]:
    """The adapter with lambda:Invoke stubbed; `function` runs the ConvertFunction's handler on
    the same (moto) bucket when the invoke is made, as the real function would."""
    client = boto3.client("lambda", region_name="us-east-1")
    if function is not None:
        def run_function(params: dict[str, Any], **_: Any) -> None:
            handle(json.loads(params["Payload"]), blobs, function)
        client.meta.events.register("before-parameter-build.lambda.Invoke", run_function)
    stubber = Stubber(client)
    payload = json.dumps({"convert": REQUEST_ID, "filename": filename}, ensure_ascii=False).encode()
    stubber.add_response("invoke", answer, {"FunctionName": "mailmoat-convert",
                                            "InvocationType": "RequestResponse", "Payload": payload})
    stubber.activate()
    return LambdaPdfConverter(blobs, "mailmoat-convert", client=client,
                              new_id=lambda: REQUEST_ID), stubber


def test_the_synchronous_payload_limit_is_six_mebibytes() -> None:
    # https://docs.aws.amazon.com/lambda/latest/dg/API_Invoke.html: "For synchronous
    # invocations, the maximum payload size is 6 MB."
    assert SYNC_PAYLOAD_LIMIT == 6 * 1024 * 1024


def test_a_file_above_the_payload_limit_converts_through_s3(blobs: Any) -> None:
    big = b"PK\x03\x04" + b"\x00" * (SYNC_PAYLOAD_LIMIT + 1024 * 1024)  # 7 MB: never in a payload
    function = Converter()
    adapter, stubber = _adapter(blobs, function, _answer({"ok": True, "size": len(PDF)}), "見積.docx")
    assert adapter.convert(big, "見積.docx") == PDF
    stubber.assert_no_pending_responses()  # the one invoke, with only the id and the name
    assert function.seen == [(len(big), "見積.docx")]
    assert list(blobs.keys(CONVERT_PREFIX)) == []  # input and output deleted


def test_a_file_the_function_cannot_convert_is_a_conversion_error(blobs: Any) -> None:
    adapter, _ = _adapter(blobs, Converter(ConversionError("LibreOffice did not convert it")),
                          _answer({"ok": False, "error": "LibreOffice did not convert it"}), "a.docx")
    with pytest.raises(ConversionError, match="LibreOffice did not convert it"):
        adapter.convert(b"PK\x03\x04", "a.docx")
    assert list(blobs.keys(CONVERT_PREFIX)) == []


def test_a_function_error_is_a_conversion_error(blobs: Any) -> None:
    adapter, _ = _adapter(blobs, None, _answer({"errorMessage": "Task timed out"}, "Unhandled"),
                          "a.docx")
    with pytest.raises(ConversionError, match="Unhandled"):
        adapter.convert(b"PK\x03\x04", "a.docx")
    assert list(blobs.keys(CONVERT_PREFIX)) == []


def test_an_ok_without_a_pdf_is_a_conversion_error(blobs: Any) -> None:
    adapter, _ = _adapter(blobs, None, _answer({"ok": True}), "a.docx")
    with pytest.raises(ConversionError, match="no PDF"):
        adapter.convert(b"PK\x03\x04", "a.docx")


def test_an_unreachable_function_is_a_conversion_error(blobs: Any) -> None:
    client = boto3.client("lambda", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error("invoke", "TooManyRequestsException", http_status_code=429)
    stubber.activate()
    adapter = LambdaPdfConverter(blobs, "mailmoat-convert", client=client, new_id=lambda: REQUEST_ID)
    with pytest.raises(ConversionError, match="not reached"):
        adapter.convert(b"PK\x03\x04", "a.docx")
    assert list(blobs.keys(CONVERT_PREFIX)) == []


@pytest.mark.parametrize("event", [None, [], {"convert": "../../etc", "filename": "a.docx"},
                                   {"convert": REQUEST_ID}, {"convert": REQUEST_ID, "filename": "x" * 300}])
def test_the_function_answers_a_malformed_request_without_raising(blobs: Any, event: Any) -> None:
    assert handle(event, blobs, Converter()) == {"ok": False, "error": "malformed conversion request"}


def test_the_function_answers_a_missing_input(blobs: Any) -> None:
    answer = handle({"convert": REQUEST_ID, "filename": "a.docx"}, blobs, Converter())
    assert answer["ok"] is False and "no input" in answer["error"]
