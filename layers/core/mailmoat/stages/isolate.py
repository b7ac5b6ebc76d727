"""Stage 3: decide what happens to the message and each attachment, then isolate."""

from __future__ import annotations

from mailmoat.context import AttachmentAction, Disposition, MessageContext
from mailmoat.pipeline import Services, register
from mailmoat.policy import decide


class Isolate:
    name = "isolate"

    def run(self, ctx: MessageContext, services: Services) -> None:
        decide(ctx, services.tenant(ctx))
        pending = [a for a in ctx.attachments if a.action != AttachmentAction.KEEP]
        if pending and ctx.disposition == Disposition.DELIVER:
            # Moving files to the portal is not built yet. Delivering the message with a file
            # the policy wants out of it would be a silent bypass, so fail closed: quarantine.
            ctx.add("ISOLATION_UNAVAILABLE", "message",
                    ", ".join(f"{a.path}:{a.action}" for a in pending))
            ctx.disposition = Disposition.QUARANTINE


register(Isolate())
