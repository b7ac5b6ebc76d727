"""Stage 3: decide what happens to the message and each attachment, then isolate."""

from __future__ import annotations

from mailmoat.context import MessageContext
from mailmoat.pipeline import Services, register
from mailmoat.policy import decide


class Isolate:
    name = "isolate"

    def run(self, ctx: MessageContext, services: Services) -> None:
        decide(ctx, services.tenant(ctx))


register(Isolate())
