"""BlobStateStore: each stage's snapshot as JSON in the blob store, with the bodies it made.

Layout (the AWS roles are written against it): work/<id>/<stage>/state.json, output.eml and
rcpt/<recipient>.eml; the rewrite stage's under out/<id>/rewrite/, the only place besides raw/
the deliver function may read."""

from __future__ import annotations

import json
from urllib.parse import quote

from mailmoat.context import MessageContext
from mailmoat.ports import BlobStore
from mailmoat.snapshot import dump, load


def _prefix(message_id: str, stage: str) -> str:
    return f"{'out' if stage == 'rewrite' else 'work'}/{message_id}/{stage}"


def _rcpt_key(recipient: str) -> str:
    return quote(recipient.lower(), safe="@.+-_")


class BlobStateStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def save(self, ctx: MessageContext, stage: str) -> None:
        prefix = _prefix(ctx.id, stage)
        state = dump(ctx)
        if ctx.output is not None:
            self.blobs.put(f"{prefix}/output.eml", ctx.output)
        for rcpt, data in ctx.outputs.items():
            self.blobs.put(f"{prefix}/rcpt/{_rcpt_key(rcpt)}.eml", data)
        state["stored"] = {"output": ctx.output is not None, "outputs": sorted(ctx.outputs)}
        # Written last: a state.json names only bodies that are already there.
        self.blobs.put(f"{prefix}/state.json", json.dumps(state, ensure_ascii=False).encode("utf-8"))

    def load(self, message_id: str, raw: bytes, stage: str) -> MessageContext | None:
        prefix = _prefix(message_id, stage)
        try:
            data = json.loads(self.blobs.get(f"{prefix}/state.json"))
        except FileNotFoundError:
            return None
        ctx = load(data, raw)
        stored = data.get("stored", {})
        if stored.get("output"):
            ctx.output = self.blobs.get(f"{prefix}/output.eml")
        for rcpt in stored.get("outputs", []):
            ctx.outputs[rcpt] = self.blobs.get(f"{prefix}/rcpt/{_rcpt_key(rcpt)}.eml")
        return ctx

    def discard(self, message_id: str) -> None:
        """Nothing: the bucket's lifecycle rule expires work/ and out/ (the roles cannot delete)."""
