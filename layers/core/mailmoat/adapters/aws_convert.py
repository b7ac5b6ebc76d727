"""PdfConverter on AWS: the ConvertFunction (LibreOffice container image), invoked synchronously.
The file and the PDF go through the quarantine bucket under isolated/convert/<id>/; the invoke
payload and its answer carry only the id, the name and a status (mailmoat.convert.remote)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from mailmoat.convert import ConversionError
from mailmoat.convert.remote import MAX_FILENAME, SYNC_PAYLOAD_LIMIT, input_key, output_key
from mailmoat.ports import BlobStore

log = logging.getLogger("mailmoat.convert")

# The function's own deadline is 60 s a file plus a cold start of LibreOffice; no retries: a
# conversion that failed once is CONVERT_FAILED, the original stays isolated.
_CLIENT_CONFIG = Config(read_timeout=200, connect_timeout=10, retries={"total_max_attempts": 1})


class LambdaPdfConverter:
    """The PdfConverter port over the ConvertFunction."""

    def __init__(self, blobs: BlobStore, function_name: str, *, client: Any = None,
                 max_input_bytes: int = 50 << 20,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        if not function_name:
            raise ValueError("a ConvertFunction name is required")
        self.blobs = blobs
        self.function_name = function_name
        self.client = client if client is not None else boto3.client("lambda", config=_CLIENT_CONFIG)
        self.max_input_bytes = max_input_bytes
        self.new_id = new_id

    def convert(self, data: bytes, filename: str) -> bytes:
        if len(data) > self.max_input_bytes:
            raise ConversionError(f"larger than {self.max_input_bytes} bytes")
        request_id = self.new_id()
        payload = json.dumps({"convert": request_id, "filename": filename[-MAX_FILENAME:]},
                             ensure_ascii=False).encode()
        if len(payload) >= SYNC_PAYLOAD_LIMIT:  # cannot happen: an id and a name
            raise ConversionError("conversion request too large")
        self.blobs.put(input_key(request_id), data)
        try:
            try:
                response = self.client.invoke(FunctionName=self.function_name,
                                              InvocationType="RequestResponse", Payload=payload)
                answer = json.loads(response["Payload"].read() or b"null")
            except Exception as exc:  # throttled, timed out, no permission: fail closed
                raise ConversionError(f"ConvertFunction not reached: {type(exc).__name__}") from exc
            if response.get("FunctionError") or not isinstance(answer, dict):
                raise ConversionError(f"ConvertFunction failed: {response.get('FunctionError')}")
            if not answer.get("ok"):
                raise ConversionError(str(answer.get("error") or "not converted")[:300])
            try:
                return self.blobs.get(output_key(request_id))
            except FileNotFoundError as exc:
                raise ConversionError("ConvertFunction stored no PDF") from exc
        finally:
            for key in (input_key(request_id), output_key(request_id)):
                try:
                    self.blobs.delete(key)
                except Exception as exc:  # the lifecycle rule removes it within a day
                    log.warning("conversion object not deleted", extra={
                        "key": key, "detail": type(exc).__name__})
