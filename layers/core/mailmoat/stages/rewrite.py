"""Stage 4: make the message safe to read (banner, defanged links, HTML→text, headers, ARC seal)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mailmoat.context import Disposition, MessageContext
from mailmoat.pipeline import Services, register
from mailmoat.rewrite.rewriter import rewrite_copies

log = logging.getLogger("mailmoat.rewrite")

# A dropped or already held message is never handed over, so there is nothing to rewrite.
_REWRITTEN = frozenset({Disposition.DELIVER, Disposition.QUARANTINE})


class Rewrite:
    name = "rewrite"

    def run(self, ctx: MessageContext, services: Services) -> None:
        if ctx.disposition not in _REWRITTEN:
            return
        try:
            tenant = services.tenant(ctx)
            if ctx.disposition == Disposition.DELIVER:
                _prepare_for_delivery(ctx, services.before_seal(tenant))
            # Per-recipient copies (their own portal link, their own spam treatment) too.
            result, outputs = rewrite_copies(ctx, services.settings, tenant)
        except Exception as exc:
            # Fail closed: hostile input or a broken key must not deliver a half-rewritten
            # (or unsealed) message; the original stays stored and the admin can re-drive it.
            log.exception("rewrite failed", extra={"message_id": ctx.id, "stage": self.name})
            ctx.add("REWRITE_FAILED", "message", f"{type(exc).__name__}: {exc}"[:300])
            ctx.hold("the message could not be rewritten")
            return
        for symbol, detail in result.findings:
            ctx.add(symbol, "message", detail)
        for action in result.actions:
            ctx.add_action(action)
        ctx.output = result.data
        ctx.outputs = outputs


def _prepare_for_delivery(ctx: MessageContext, before_seal: Callable[[bytes], bytes] | None) -> None:
    """What the delivery path does to a copy (SES rewrites From) happens before the seal, which
    covers From: the copies sealed here are then sent unchanged."""
    if before_seal is None:
        return
    before = ctx.output
    ctx.output = before_seal(before if before is not None else ctx.raw)
    ctx.outputs = {rcpt: ctx.output if data is before else before_seal(data)
                   for rcpt, data in ctx.outputs.items()}


register(Rewrite())
