"""Stage 5: hand the finished message over, at most once per recipient, and record every outcome."""

from __future__ import annotations

import logging

from mailmoat.archive import retain_copies
from mailmoat.bounce import Failure, notify_sender, status_of
from mailmoat.context import Disposition, MessageContext
from mailmoat.pipeline import Services, register
from mailmoat.ports import DeliveryError
from mailmoat.spam.quarantine import hold as hold_spam
from mailmoat.states import Outcome

log = logging.getLogger("mailmoat.deliver")


class Deliver:
    name = "deliver"

    def run(self, ctx: MessageContext, services: Services) -> None:
        body = ctx.output if ctx.output is not None else ctx.raw
        if ctx.disposition == Disposition.QUARANTINE:
            services.blobs.put(f"quarantine/{ctx.id}.eml", body)
            for rcpt in ctx.envelope.rcpt_to:
                ctx.deliveries[rcpt] = Outcome.QUARANTINED.text()
            return
        if ctx.disposition != Disposition.DELIVER:
            return
        mailer = services.mailer_for(services.tenant(ctx))
        idempotent = getattr(mailer, "idempotent", False)
        refused: list[Failure] = []
        for rcpt in ctx.envelope.rcpt_to:
            done = services.log.delivery_outcome(ctx.id, rcpt)
            settled = Outcome.of(done)
            if done is not None and settled is not None and settled.done:
                ctx.deliveries[rcpt] = done  # a re-run never delivers twice
                continue
            if ctx.spam.treatment(rcpt) == "quarantine":
                # Spam quarantine is per recipient: this copy, exactly as it would have been
                # delivered, waits in the spam store for a release from the digest.
                ctx.deliveries[rcpt] = hold_spam(ctx, services, rcpt,
                                                 ctx.outputs.get(rcpt.lower(), body))
                continue
            if done is not None and settled is Outcome.HELD and not idempotent:
                ctx.deliveries[rcpt] = done  # in doubt until an admin says resend
                ctx.hold(f"delivery to {rcpt} in doubt; check, then `mailmoat redrive --resend`")
                continue
            if not services.log.claim_delivery(ctx.id, rcpt) and not idempotent:
                # Someone claimed this delivery and recorded no outcome. Still running
                # (concurrent SQS copies on AWS): wait for its outcome. Gone (a crash): it may
                # have sent; at most once per recipient means we do not send again.
                if services.log.claim_is_stale(ctx.id, rcpt):
                    self._uncertain(ctx, services, rcpt,
                                    "an earlier attempt was interrupted while sending")
                else:
                    ctx.deliveries[rcpt] = Outcome.DEFERRED.text("another attempt holds the delivery claim")
                continue
            # Each recipient's copy carries that recipient's own portal link (isolate stage).
            data = ctx.outputs.get(rcpt.lower(), body)
            try:
                where = mailer.deliver(ctx.id, rcpt, ctx.envelope.mail_from, data)
            except DeliveryError as exc:
                if exc.maybe_delivered and not idempotent:
                    self._uncertain(ctx, services, rcpt, str(exc))
                    continue
                kind = Outcome.FAILED if exc.permanent else Outcome.DEFERRED
                outcome = kind.text(str(exc))
                log.warning("delivery %s", kind, extra={"message_id": ctx.id, "stage": self.name})
                if exc.permanent:
                    services.log.finish_delivery(ctx.id, rcpt, outcome)
                    refused.append(Failure(rcpt, status_of(exc), str(exc)))
                else:
                    services.log.release_delivery(ctx.id, rcpt)  # nothing sent: retry may claim
                ctx.deliveries[rcpt] = outcome
                continue
            outcome = Outcome.DELIVERED.text(where)
            services.log.finish_delivery(ctx.id, rcpt, outcome)
            ctx.deliveries[rcpt] = outcome
        notify_sender(ctx, services, refused)  # a DSN only to an authenticated sender
        retain_copies(ctx, services)  # archive, journal, keep-mail (mailmoat.archive); never raises


    @staticmethod
    def _uncertain(ctx: MessageContext, services: Services, rcpt: str, why: str) -> None:
        outcome = Outcome.HELD.text(f"may already be delivered ({why})")
        services.log.finish_delivery(ctx.id, rcpt, outcome)
        ctx.deliveries[rcpt] = outcome
        ctx.hold(f"delivery to {rcpt} may already have happened ({why}); check the mailbox, "
                 "then `mailmoat redrive --resend`")


register(Deliver())
