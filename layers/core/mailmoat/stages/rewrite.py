"""Stage 4: make the message safe to read (banner, neutralised links, our headers)."""

from __future__ import annotations

from mailmoat.context import MessageContext
from mailmoat.pipeline import Services, register


class Rewrite:
    name = "rewrite"

    def run(self, ctx: MessageContext, services: Services) -> None:
        # Banner, link neutralising and ARC sealing land with the authentication issue;
        # until then the message is delivered as received.
        if ctx.output is None:
            ctx.output = ctx.raw


register(Rewrite())
