"""Stage 2: list every attachment (DESIGN §3) and give each a verdict (DESIGN §4)."""

from __future__ import annotations

import hashlib
import logging
import time

from mailmoat.context import AttachmentReport, MessageContext, Verdict
from mailmoat.message import Part
from mailmoat.pipeline import Services, register
from mailmoat.scan.engine import Engine, engine_for
from mailmoat.scan.lists import Lists
from mailmoat.scan.result import FileResult

log = logging.getLogger("mailmoat.scan")

# Notes message.py made while walking that also count against the file.
_PART_NOTES = frozenset({"FILENAME_MISMATCH"})


class Scan:
    name = "scan"

    def run(self, ctx: MessageContext, services: Services) -> None:
        assert ctx.parsed is not None
        limits = services.settings.limits
        deadline = time.monotonic() + limits.scan_seconds
        tenant = services.tenant(ctx)
        lists = Lists.for_tenant(tenant)
        engine = engine_for(services, tenant)
        parts = ctx.parsed.parts
        files = [p for p in parts if p.is_attachment]
        if files and services.antivirus is None and not ctx.has("AV_DISABLED"):
            ctx.add("AV_DISABLED", "message", "no antivirus configured; files checked statically only")
        reports: dict[str, AttachmentReport] = {}
        for part in files:
            reports[part.path] = self._attachment(ctx, part, engine, lists, deadline)
            part.release_large()  # scanned: a later reader decodes it again (rarely, isolate)
        ordered: list[AttachmentReport] = []
        for part in parts:
            if part.path in reports:
                ordered.append(reports[part.path])
            elif part.kind == "message":
                held = self._attached_message(part, list(reports.values()))
                if held is not None:
                    ordered.append(held)
        ctx.attachments.extend(ordered)

    def _attachment(self, ctx: MessageContext, part: Part, engine: Engine, lists: Lists,
                    deadline: float) -> AttachmentReport:
        data = part.payload()
        sha256 = hashlib.sha256(data).hexdigest()
        report = AttachmentReport(path=part.path, filename=part.filename,
                                  declared_type=part.content_type, size=len(data), sha256=sha256)
        if time.monotonic() >= deadline:
            result = FileResult(detected_type="application/octet-stream", cacheable=False)
            result.add("SCAN_FAILED", "scan time bound reached before this file")
        else:
            try:
                result = engine.analyse(data, part.filename, lists, deadline=deadline, sha256=sha256)
            except Exception as exc:  # never raise: the file is isolated, the message goes on
                log.exception("attachment analysis failed",
                              extra={"message_id": ctx.id, "stage": "scan"})
                result = FileResult(detected_type="application/octet-stream", cacheable=False)
                result.add("SCAN_FAILED", f"{type(exc).__name__}: {exc}"[:300])
        for symbol, detail in part.notes:
            if symbol in _PART_NOTES:
                result.add(symbol, detail)
        report.detected_type = result.detected_type
        report.members = result.members
        for symbol in result.symbols:
            report.add_symbol(symbol)
        report.verdict = result.verdict
        for hit in result.hits:
            if hit.symbol in _PART_NOTES:
                continue  # message.py already recorded it as a finding
            target = part.path if hit.member is None else f"{part.path}:{hit.member}"
            ctx.add(hit.symbol, target, hit.detail)
        return report

    def _attached_message(self, part: Part, reports: list[AttachmentReport]) -> AttachmentReport | None:
        """An attached message is listed only when it holds an attachment; it is as bad as
        the worst file inside it (DESIGN §3, §9)."""
        inside = [r for r in reports if r.path.startswith(part.path + ".")]
        if not inside:
            return None
        data = part.payload()
        report = AttachmentReport(path=part.path, filename=part.filename,
                                  declared_type=part.content_type, size=len(data),
                                  sha256=hashlib.sha256(data).hexdigest(),
                                  detected_type="message/rfc822")
        report.verdict = Verdict.worst([r.verdict for r in inside])
        for r in inside:
            for symbol in r.symbols:
                report.add_symbol(symbol)
        return report


register(Scan())
