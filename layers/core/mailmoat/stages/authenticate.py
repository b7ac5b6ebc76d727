"""Stage 1: who sent this and by which route (SPF, DKIM, DMARC, ARC, Received chain)."""

from __future__ import annotations

from mailmoat.context import MessageContext
from mailmoat.pipeline import Services, register


class Authenticate:
    name = "authenticate"

    def run(self, ctx: MessageContext, services: Services) -> None:
        # Sender authentication lands with the authentication issue; until then the
        # stage records nothing and the report keeps its "none" defaults.
        return None


register(Authenticate())
