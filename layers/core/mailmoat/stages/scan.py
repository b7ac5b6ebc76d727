"""Stage 2: list every attachment (DESIGN §3) and give each a verdict (DESIGN §4)."""

from __future__ import annotations

import hashlib

from mailmoat.context import AttachmentReport, MessageContext
from mailmoat.pipeline import Services, register


class Scan:
    name = "scan"

    def run(self, ctx: MessageContext, services: Services) -> None:
        assert ctx.parsed is not None
        for part in ctx.parsed.attachments:
            data = part.payload()
            ctx.attachments.append(AttachmentReport(
                path=part.path,
                filename=part.filename,
                declared_type=part.content_type,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            ))


register(Scan())
