"""Where a message stands in the log (MessageState) and how one recipient's copy ended (Outcome).

Both are stored as their text, so the message log, the console, send-test and the JSON
report read the same words as before; code compares enums, never string prefixes."""

from __future__ import annotations

import enum


class MessageState(enum.StrEnum):
    """One message-log row's state. Every accepted message ends in one of FINAL_STATES."""

    ACCEPTED = "accepted"  # stored, nothing run yet
    PROCESSING = "processing"  # a stage has begun (its attempt is counted)
    DEFERRED = "deferred"  # waits for a retry (a 4xx from the mailbox host, a store hiccup)
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"
    DROPPED = "dropped"
    HELD = "held"  # could not be processed: kept, visible to the admin, re-drivable
    FAILED = "failed"  # every recipient refused it, or its retries ran out (DSN sent)
    SPLIT = "split"  # the envelope named several tenants: one message per tenant carries on

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES: frozenset[MessageState] = frozenset({
    MessageState.DELIVERED, MessageState.QUARANTINED, MessageState.DROPPED, MessageState.HELD,
    MessageState.FAILED, MessageState.SPLIT})
# What an admin may send through the pipeline again.
REDRIVABLE_STATES: frozenset[MessageState] = frozenset({MessageState.HELD, MessageState.FAILED})


class Outcome(enum.StrEnum):
    """How one recipient's copy ended. Stored as "<outcome>: <detail>" (or the bare word)."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"
    QUARANTINED = "quarantined"  # held in the spam quarantine for this recipient
    HELD = "held"  # in doubt (may already be delivered): waits for `redrive --resend`

    @classmethod
    def of(cls, text: str | None) -> Outcome | None:
        """The outcome a stored text records; None for no text or one we did not write."""
        if not text:
            return None
        word = text.partition(":")[0].strip()
        try:
            return cls(word)
        except ValueError:
            return None

    def text(self, detail: str = "", limit: int = 300) -> str:
        """The stored form: the word, and the detail after a colon."""
        return (f"{self.value}: {detail}" if detail else self.value)[:limit]

    @property
    def done(self) -> bool:
        """Settled for good: a re-run never sends this copy again."""
        return self in (Outcome.DELIVERED, Outcome.FAILED)


def outcome_is(text: str | None, *outcomes: Outcome) -> bool:
    return Outcome.of(text) in outcomes
