"""Stage 5: hand the finished message over, at most once per recipient, and record every outcome."""

from __future__ import annotations

import logging

from mailmoat.context import Disposition, MessageContext
from mailmoat.pipeline import Services, register
from mailmoat.ports import DeliveryError

log = logging.getLogger("mailmoat.deliver")


class Deliver:
    name = "deliver"

    def run(self, ctx: MessageContext, services: Services) -> None:
        body = ctx.output if ctx.output is not None else ctx.raw
        if ctx.disposition == Disposition.QUARANTINE:
            services.blobs.put(f"quarantine/{ctx.id}.eml", body)
            for rcpt in ctx.envelope.rcpt_to:
                ctx.deliveries[rcpt] = "quarantined"
            return
        if ctx.disposition != Disposition.DELIVER:
            return
        mailer = services.mailer_for(services.tenant(ctx))
        for rcpt in ctx.envelope.rcpt_to:
            done = services.log.delivery_outcome(ctx.id, rcpt)
            if done is not None and done.startswith(("delivered", "failed")):
                ctx.deliveries[rcpt] = done  # a re-run never delivers twice
                continue
            services.log.claim_delivery(ctx.id, rcpt)
            # Each recipient's copy carries that recipient's own portal link (isolate stage).
            data = ctx.outputs.get(rcpt.lower(), body)
            try:
                where = mailer.deliver(ctx.id, rcpt, ctx.envelope.mail_from, data)
            except DeliveryError as exc:
                outcome = f"{'failed' if exc.permanent else 'deferred'}: {exc}"[:300]
                log.warning("delivery %s", outcome.split(":")[0],
                            extra={"message_id": ctx.id, "stage": self.name})
                if exc.permanent:
                    services.log.finish_delivery(ctx.id, rcpt, outcome)
                ctx.deliveries[rcpt] = outcome
                continue
            outcome = f"delivered: {where}"
            services.log.finish_delivery(ctx.id, rcpt, outcome)
            ctx.deliveries[rcpt] = outcome


register(Deliver())
