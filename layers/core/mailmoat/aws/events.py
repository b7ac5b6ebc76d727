"""What a Lambda event names: MessageRef, the typed reference to one stored message that an SQS,
S3 or SES record carries (the handlers' first move)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

log = logging.getLogger("mailmoat.aws.events")

_MAX_ID_CHARS = 256
# mailmoat.runner.RAW_PREFIX, not imported from there: the runner loads the whole pipeline, which
# a handler module's import must not (tests/unit/test_import_budget.py checks they agree).
RAW_PREFIX = "raw/"
# The object SES writes under an S3 action's prefix when the receipt rule is created (proof
# that it may write there): raw/AMAZON_SES_SETUP_NOTIFICATION. Its S3 event is no mail.
SES_SETUP_NOTIFICATION = "AMAZON_SES_SETUP_NOTIFICATION"


def is_setup_notification(key: str) -> bool:
    return key == RAW_PREFIX + SES_SETUP_NOTIFICATION


def _message_id(value: object) -> str:
    """A message id becomes part of S3 keys and DynamoDB keys, so it must not carry a path."""
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_CHARS:
        raise ValueError(f"not a message id: {value!r:.80}")
    if "/" in value or "\\" in value or value in {".", ".."} or not value.isprintable():
        raise ValueError(f"not a message id: {value!r:.80}")
    return value


# Mail Manager's Write to S3 action documents no key naming (docs/aws-limits.md §2), so a key may
# nest below raw/: its message id replaces each "/" with this (ids become S3 and DynamoDB keys and
# must not carry a path), and the record keeps the real key (MessageRecord.raw_key).
NESTED_KEY_SEPARATOR = "~"


def _id_from_key(key: str) -> str:
    if not key.startswith(RAW_PREFIX):
        raise ValueError(f"object key outside {RAW_PREFIX}: {key!r:.120}")
    rest = key.removeprefix(RAW_PREFIX)
    if any(part in {"", ".", ".."} for part in rest.split("/")):
        raise ValueError(f"not a message key: {key!r:.120}")
    return _message_id(rest.replace("/", NESTED_KEY_SEPARATOR))


def message_id_for_key(key: str) -> str:
    """The message id of a stored raw object (raw/<id>, or a key nested below raw/)."""
    return _id_from_key(key)


def _json_object(text: object, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class MessageRef:
    """One stored message a record points at. `bucket` None means this deployment's raw bucket."""

    message_id: str
    key: str
    bucket: str | None = None
    stage: str | None = None  # set by our own stage messages: the stage they are queued for
    recipients: tuple[str, ...] = ()  # envelope recipients, when the event carries them (SES)

    @property
    def raw_key(self) -> str | None:
        """The stored object's key when it is not the default raw/<id> (None otherwise)."""
        return None if self.key == RAW_PREFIX + self.message_id else self.key

    @classmethod
    def for_id(cls, message_id: str, *, stage: str | None = None) -> MessageRef:
        message_id = _message_id(message_id)
        return cls(message_id=message_id, key=RAW_PREFIX + message_id, stage=stage)

    @classmethod
    def from_s3_record(cls, record: Mapping[str, Any]) -> MessageRef:
        """An S3 event notification record (ObjectCreated only; the bucket sends nothing else)."""
        event_name = str(record.get("eventName", ""))
        if not event_name.startswith("ObjectCreated:"):
            raise ValueError(f"unexpected S3 event {event_name!r}")
        s3 = record["s3"]
        # S3 form-encodes keys in notifications ("+" is a space, "%2B" a plus). This is the one
        # place that decodes them: everything downstream sees the real key.
        key = unquote_plus(s3["object"]["key"])
        return cls(message_id=_id_from_key(key), key=key, bucket=s3["bucket"]["name"])

    @classmethod
    def from_ses_record(cls, record: Mapping[str, Any]) -> MessageRef:
        """An SES receipt event (Lambda action, or the SNS notification of an S3 action)."""
        ses = record.get("ses", record)
        mail, receipt = ses["mail"], ses.get("receipt", {})
        action = receipt.get("action", {})
        recipients = tuple(str(r) for r in receipt.get("recipients") or mail.get("destination", []))
        if action.get("type") == "S3" and action.get("objectKey"):
            key = str(action["objectKey"])
            return cls(message_id=_id_from_key(key), key=key, bucket=action.get("bucketName"),
                       recipients=recipients)
        # A Lambda action runs after our S3 action in the same rule, so the object is raw/<id>.
        message_id = _message_id(mail["messageId"])
        return cls(message_id=message_id, key=RAW_PREFIX + message_id, recipients=recipients)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> list[MessageRef]:
        """A queue message's JSON body: S3 notification, S3 test event, SNS envelope, or ours."""
        if body.get("Event") == "s3:TestEvent":
            return []  # S3 sends it once when the notification is configured; it names no object
        if body.get("Type") == "Notification" and "Message" in body:
            return cls.from_body(_json_object(body["Message"], "SNS message"))
        if "Records" in body:
            return [ref for r in body["Records"] for ref in cls._from_record(r)]
        if body.get("notificationType") == "Received":
            return [cls.from_ses_record(body)]
        if "id" in body and "stage" in body:
            stage = body["stage"]
            if stage not in _stage_names():
                raise ValueError(f"unknown stage {stage!r:.40}")
            ref = cls.for_id(body["id"], stage=stage)
            if "key" in body:  # a stored object whose key is not raw/<id> (reconcile sends it)
                key = str(body["key"])
                if _id_from_key(key) != ref.message_id:
                    raise ValueError(f"key {key!r:.120} does not name message {ref.message_id!r:.80}")
                ref = cls(message_id=ref.message_id, key=key, stage=stage)
            return [ref]
        raise ValueError(f"unrecognised message body with keys {sorted(body)[:8]}")

    @classmethod
    def from_sqs(cls, record: Mapping[str, Any]) -> list[MessageRef]:
        """Every message one SQS record names: none for s3:TestEvent, else one per S3/SES record.
        Accepts a plain dict or powertools' SQSRecord. Anything unrecognised raises ValueError, so
        the record is retried and ends in the DLQ (alarmed) instead of being dropped silently."""
        return cls.from_body(_json_object(record["body"], "SQS body"))

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> list[MessageRef]:
        """A whole Lambda event (for `sam local invoke` and tools): SQS, S3 or SES records."""
        records = event.get("Records")
        if not isinstance(records, list):
            raise ValueError("not a records event (SQS, S3 or SES)")
        return [ref for record in records for ref in cls._from_any(record)]

    @classmethod
    def _from_any(cls, record: Mapping[str, Any]) -> list[MessageRef]:
        if record.get("eventSource") == "aws:sqs":
            return cls.from_sqs(record)
        return cls._from_record(record)

    @classmethod
    def _from_record(cls, record: Mapping[str, Any]) -> list[MessageRef]:
        """The message an S3 or SES record names; none for SES's setup notification, which
        is acknowledged without a message row (nothing is wrong, so nothing goes to the DLQ)."""
        source = record.get("eventSource") or record.get("EventSource")
        if source == "aws:s3":
            ref = cls.from_s3_record(record)
        elif source == "aws:ses":
            ref = cls.from_ses_record(record)
        else:
            raise ValueError(f"unsupported record source {source!r:.40}")
        if is_setup_notification(ref.key):
            log.info("setup notification skipped", extra={"key": ref.key})
            return []
        return [ref]


def check_refs(stage: str, refs: list[MessageRef]) -> None:
    """A stage function takes only its own stage's messages: one on the wrong queue would skip a
    stage, so it is refused rather than guessed (and retried into the DLQ, where it is seen)."""
    if stage not in _stage_names():
        raise ValueError(f"unknown stage {stage!r:.40}")
    for ref in refs:
        if ref.stage is not None and ref.stage != stage:
            raise ValueError(f"message {ref.message_id} queued for {ref.stage}, not {stage}")


def _stage_names() -> tuple[str, ...]:
    from mailmoat.pipeline import STAGE_NAMES  # at the first stage message, not at import

    return STAGE_NAMES
