"""Admin operations on stored mail that the CLI and the console share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailmoat.runtime import Runtime

REDRIVABLE_STATES = frozenset({"held", "failed"})


@dataclass(frozen=True, slots=True)
class Redrive:
    message_id: str
    state: str
    deliveries: dict[str, str]


def redrive(runtime: Runtime, message_id: str, *, resend: bool = False) -> Redrive | None:
    """Process a stored message again (as `mailmoat redrive`): back to `accepted`, then the
    whole pipeline (on AWS: the ReconcileFunction re-queues it on its next run). With
    `resend`, deliveries whose outcome was in doubt may be tried again; without it they stay
    held, so nobody gets the message twice."""
    logbook = runtime.services.log
    record = logbook.get(message_id)
    if record is None:
        return None
    if resend:
        for rcpt in record.rcpt_to:
            if logbook.claim_is_stale(message_id, rcpt):
                logbook.release_delivery(message_id, rcpt)
    logbook.update(message_id, state="accepted", error=None)
    if runtime.settings.runtime == "aws":
        # The portal function must not run the stages itself (their roles, their queues): an
        # unfinished row is what the scheduled reconciler re-queues at the next stage due.
        return Redrive(message_id, "accepted", {})
    ctx = runtime.process_stored(message_id)
    final = logbook.get(message_id)
    return Redrive(message_id, final.state if final else "unknown",
                   dict(ctx.deliveries) if ctx is not None else {})
