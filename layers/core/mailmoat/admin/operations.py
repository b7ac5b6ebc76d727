"""Admin operations on stored mail that the CLI and the console share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailmoat import states

if TYPE_CHECKING:
    from mailmoat.runtime import Runtime

REDRIVABLE_STATES = states.REDRIVABLE_STATES


@dataclass(frozen=True, slots=True)
class Redrive:
    message_id: str
    state: str
    deliveries: dict[str, str]


def redrive(runtime: Runtime, message_id: str, *, resend: bool = False) -> Redrive | None:
    """Process a stored message again (as `mailmoat redrive`): back to `accepted`, then every
    stage — now, in this process, where it runs its stages itself (local); through the first
    stage's queue where they run elsewhere (AWS). With `resend`, deliveries whose outcome was
    in doubt may be tried again; without it they stay held, so nobody gets the message twice."""
    logbook = runtime.services.log
    record = logbook.get(message_id)
    if record is None:
        return None
    if resend:
        for rcpt in record.rcpt_to:
            if logbook.claim_is_stale(message_id, rcpt):
                logbook.release_delivery(message_id, rcpt)
    runtime.runner.redrive(message_id)
    if runtime.inbox is None:
        return Redrive(message_id, str(states.MessageState.ACCEPTED), {})
    ctx = runtime.process_stored(message_id)
    final = logbook.get(message_id)
    return Redrive(message_id, final.state if final else "unknown",
                   dict(ctx.deliveries) if ctx is not None else {})
