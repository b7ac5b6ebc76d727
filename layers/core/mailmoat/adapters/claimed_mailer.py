"""ClaimedMailer: a mailer that sends only under a delivery claim this process won.

The deliver stage claims (message, recipient) before it sends. On DynamoDB the claim is a
conditional put, so of two concurrent runs (SQS delivers at least once) only one holds it;
the other is told the delivery is deferred and finds the outcome on its retry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailmoat.ports import DeliveryError

if TYPE_CHECKING:
    from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
    from mailmoat.ports import Mailer


class ClaimedMailer:
    def __init__(self, inner: Mailer, logbook: DynamoMessageLog) -> None:
        self.inner = inner
        self.logbook = logbook

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        if not self.logbook.holds_claim(message_id, recipient):
            # Another run holds it, or an earlier run died between claim and outcome: whether
            # that one sent is unknown, so never send again (at most once); retries then hold.
            raise DeliveryError("delivery claimed by another attempt; outcome pending",
                                permanent=False)
        try:
            return self.inner.deliver(message_id, recipient, mail_from, data)
        except DeliveryError as exc:
            if not exc.permanent and exc.code is not None:
                # The host answered with a refusal: nothing was sent, the retry may try again.
                self.logbook.release_delivery(message_id, recipient)
            raise
