"""convert-pdf on AWS: the ConvertFunction's side of the exchange. Bytes never travel in the
invoke payload (Lambda's synchronous payload limit is 6 MB, docs/aws-limits.md §Lambda): the
caller writes the file under CONVERT_PREFIX/<id>/input, invokes with {"convert": id,
"filename": name}, and reads CONVERT_PREFIX/<id>/output.pdf when the answer says ok."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from mailmoat.convert import ConversionError

if TYPE_CHECKING:
    from mailmoat.ports import BlobStore, PdfConverter

log = logging.getLogger("mailmoat.convert")

CONVERT_PREFIX = "isolated/convert/"  # quarantine bucket; a lifecycle rule expires leftovers
SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024  # Lambda Invoke, RequestResponse: request and response
MAX_FILENAME = 255
_ID = re.compile(r"[0-9a-f]{32}")


def input_key(request_id: str) -> str:
    return f"{CONVERT_PREFIX}{_checked(request_id)}/input"


def output_key(request_id: str) -> str:
    return f"{CONVERT_PREFIX}{_checked(request_id)}/output.pdf"


def _checked(request_id: str) -> str:
    if not _ID.fullmatch(request_id):
        raise ValueError("not a conversion id")
    return request_id


def handle(event: Any, blobs: BlobStore, converter: PdfConverter) -> dict[str, Any]:
    """One conversion request: {"ok": true} with the PDF stored, or {"ok": false, "error"}.
    A malformed request or a file that does not convert is an answer, never an exception."""
    if not isinstance(event, dict) or not isinstance(event.get("convert"), str) \
            or not isinstance(event.get("filename"), str) or len(event["filename"]) > MAX_FILENAME:
        return {"ok": False, "error": "malformed conversion request"}
    request_id, filename = event["convert"], event["filename"]
    try:
        source = input_key(request_id)
    except ValueError:
        return {"ok": False, "error": "malformed conversion request"}
    try:
        data = blobs.get(source)
    except Exception as exc:  # missing (FileNotFoundError), or 403 without s3:ListBucket
        return {"ok": False, "error": f"no input for this conversion ({type(exc).__name__})"}
    blobs.delete(source)
    try:
        pdf = converter.convert(data, filename)
    except ConversionError as exc:
        return {"ok": False, "error": str(exc)[:300]}
    except Exception as exc:  # a converter crash is the caller's CONVERT_FAILED, not a retry
        log.exception("conversion crashed", extra={"request_id": request_id})
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    blobs.put(output_key(request_id), pdf)
    return {"ok": True, "size": len(pdf)}
