"""What one stage hands the next: the MessageContext without its bytes, as JSON-ready data.

Both runtimes' state stores use it (runner.py): locally the snapshot stays in memory beside
the parsed message, on AWS it is a JSON object in S3 with the bodies a stage produced
(`output`, `outputs`) stored beside it. Each stage writes its own snapshot, so a re-run of a
stage starts from exactly the input it had the first time, never from a half-changed context."""

from __future__ import annotations

from typing import Any

from mailmoat.context import (
    AttachmentAction,
    AttachmentReport,
    AuthResult,
    Disposition,
    Envelope,
    Finding,
    Hop,
    MemberReport,
    MessageContext,
    SpamResult,
    StageTiming,
    Verdict,
)

STATE_VERSION = 1


def dump(ctx: MessageContext) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "id": ctx.id,
        "envelope": ctx.envelope.to_dict(),
        "tenant": ctx.tenant,
        "message_id": ctx.message_id,
        "subject": ctx.subject,
        "from_header": ctx.from_header,
        "findings": [f.to_dict() for f in ctx.findings],
        "auth": ctx.auth.to_dict(),
        "route": [h.to_dict() for h in ctx.route],
        "spam": ctx.spam.to_dict(),
        "attachments": [a.to_dict() for a in ctx.attachments],
        "actions": list(ctx.actions),
        "portal_url": ctx.portal_url,
        "disposition": str(ctx.disposition),
        "trace": [t.to_dict() for t in ctx.trace],
        "deliveries": dict(ctx.deliveries),
        "beyond_limits": ctx.beyond_limits,
    }


def load(data: dict[str, Any], raw: bytes) -> MessageContext:
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"stage state version {data.get('version')!r} is not {STATE_VERSION}")
    auth = data["auth"]
    return MessageContext(
        id=data["id"], raw=raw, envelope=Envelope.from_dict(data["envelope"]),
        tenant=data.get("tenant"), message_id=data.get("message_id"), subject=data.get("subject"),
        from_header=data.get("from_header"),
        findings=[Finding(f["symbol"], f["target"], f["detail"]) for f in data["findings"]],
        auth=AuthResult(spf=auth["spf"], dkim=auth["dkim"], dmarc=auth["dmarc"],
                        dmarc_policy=auth.get("dmarc_policy"), arc=auth["arc"], warn=auth["warn"],
                        defang=auth["defang"], upstream=dict(auth.get("upstream", {})),
                        details=dict(auth.get("details", {}))),
        route=[Hop(ip=h["ip"], country=h.get("country"), from_name=h.get("from"), by_name=h.get("by"))
               for h in data["route"]],
        spam=SpamResult(**data["spam"]),
        attachments=[_attachment(a) for a in data["attachments"]],
        actions=list(data["actions"]), portal_url=data.get("portal_url"),
        disposition=Disposition(data["disposition"]),
        trace=[StageTiming(t["stage"], t["duration_ms"], t["outcome"], t["detail"]) for t in data["trace"]],
        deliveries=dict(data.get("deliveries", {})),
        beyond_limits=bool(data.get("beyond_limits", False)))


def _attachment(a: dict[str, Any]) -> AttachmentReport:
    return AttachmentReport(
        path=a["path"], filename=a.get("filename"), declared_type=a["declared_type"], size=a["size"],
        sha256=a["sha256"], detected_type=a.get("detected_type"), verdict=Verdict(a["verdict"]),
        symbols=list(a["symbols"]), action=AttachmentAction(a["action"]),
        members=[MemberReport(name=m["name"], verdict=Verdict(m["verdict"]), symbols=list(m["symbols"]),
                              size=m.get("size")) for m in a["members"]])
