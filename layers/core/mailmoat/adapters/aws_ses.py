"""SesMailer: delivery through SES v2 SendEmail (raw) with forwarder semantics (DESIGN §1)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from mailmoat.aws.forwarder import forwarded, relay_address, routing_address
from mailmoat.ports import DeliveryError
from mailmoat.smtp_text import crlf_normalised

# SES answers these for a message it will never accept, however often it is retried.
_PERMANENT = frozenset({"MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException",
                        "AccountSuspendedException", "SendingPausedException", "NotFoundException"})


class SesMailer:
    def __init__(self, relay_identity: str, *, routing_domain: str | None = None,
                 configuration_set: str | None = None, client: Any = None) -> None:
        self.relay = relay_address(relay_identity)
        self.routing_domain = routing_domain
        self.configuration_set = configuration_set
        self.client = client if client is not None else boto3.client("sesv2")

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        destination = routing_address(recipient, self.routing_domain)
        return send_raw(self.client, self.relay, destination, forwarded(data, self.relay),
                        self.configuration_set)


class SesNoticeSender:
    """Mail the gateway writes itself to a sender (RFC 3464 DSNs), sent through SES as it is.

    Not SesMailer: a notice is already our own message, From our postmaster on the relay
    identity's domain; forwarder rewriting would turn it into "postmaster (…)" via the relay and
    add a Reply-To. The envelope sender is left to SES (the From identity; a DSN's null
    reverse path cannot be expressed through SendEmail), the destination is the original sender.
    """

    def __init__(self, from_address: str, *, configuration_set: str | None = None,
                 client: Any = None) -> None:
        if "@" not in from_address:
            raise ValueError(f"notice sender needs an address, not {from_address!r}")
        self.from_address = from_address
        self.configuration_set = configuration_set
        self.client = client if client is not None else boto3.client("sesv2")

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        return send_raw(self.client, self.from_address, recipient, data, self.configuration_set)


def send_raw(client: Any, from_address: str, to: str, data: bytes, configuration_set: str | None) -> str:
    """SES v2 SendEmail with raw content; SES's answer mapped onto DeliveryError."""
    request: dict[str, Any] = {
        "FromEmailAddress": from_address,
        "Destination": {"ToAddresses": [to]},
        "Content": {"Raw": {"Data": crlf_normalised(data)}},  # no bare CR/LF (smtp_text)
    }
    if configuration_set:
        request["ConfigurationSetName"] = configuration_set
    try:
        response = client.send_email(**request)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        # SES answered (an HTTP status): nothing was sent, so a retry may send again.
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400
        raise DeliveryError(f"SES {code}: {exc}"[:300], permanent=code in _PERMANENT,
                            code=int(status)) from exc
    except BotoCoreError as exc:  # no answer (code None): whether SES took it is unknown
        raise DeliveryError(f"SES unreachable: {exc}"[:300], permanent=False) from exc
    return f"ses:{response.get('MessageId', '')}"
