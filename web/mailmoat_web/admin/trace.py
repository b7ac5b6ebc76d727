"""The message trace: search a tenant's mail, one message's whole story, its original, a redrive,
and the list of held and failed messages."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from mailmoat.admin.operations import REDRIVABLE_STATES, redrive
from mailmoat.ports import MessageRecord, TraceQuery
from mailmoat.runner import raw_key
from mailmoat.services.downloads import Download, content_disposition, delivered
from mailmoat.states import MessageState
from mailmoat_web.admin.access import PostedScope, TenantScope, message_of
from mailmoat_web.admin.console import AdminConsole
from mailmoat_web.admin.render import PAGE_SIZE, page_number, pager, redirect, refreshed, render
from mailmoat_web.i18n import flag
from mailmoat_web.pages import not_found

log = logging.getLogger("mailmoat.admin")

router = APIRouter()

STATES = tuple(str(s) for s in MessageState)
DISPOSITIONS = ("deliver", "quarantine", "drop", "held")
VERDICTS = ("safe", "risky", "encrypted", "unsupported", "danger")
_FILTERS = ("sender", "recipient", "subject", "since", "until", "state", "disposition", "verdict",
            "symbol")


@router.get("/t/{tenant}/trace", response_class=HTMLResponse)
def trace(request: Request, tenant: str, s: TenantScope) -> Response:
    form = {k: request.query_params.get(k, "")[:200] for k in _FILTERS}
    page_no = page_number(request)
    query, problems = _trace_query(tenant, form, page_no)
    records = s.c.runtime.services.log.search(query) if not problems else []
    shown = [_row(r) for r in records[:PAGE_SIZE]]
    base = {k: v for k, v in form.items() if v}
    return render(request, s.admin, s.cfg, "admin/trace.html", {
        "form": form, "rows": shown, "problems": problems, "states": STATES,
        "dispositions": DISPOSITIONS, "verdicts": VERDICTS, "page_no": page_no,
        **pager(f"/admin/t/{tenant}/trace", base, page_no, len(records) > PAGE_SIZE)})


@router.get("/t/{tenant}/messages/{message_id}", response_class=HTMLResponse)
def message(request: Request, tenant: str, message_id: str, s: TenantScope) -> Response:
    record = message_of(s.c, tenant, message_id)
    if record is None:
        return not_found(request)
    done = request.query_params.get("done") == "redrive"
    return render(request, s.admin, s.cfg, "admin/message.html",
                  {**_detail(s.c, record), "redriven": done})


@router.post("/t/{tenant}/messages/{message_id}/raw")
def download_raw(request: Request, tenant: str, message_id: str, s: PostedScope) -> Response:
    record = message_of(s.c, tenant, message_id)
    if record is None:
        return not_found(request)
    blobs, key = s.c.runtime.services.blobs, record.raw_key or raw_key(record.id)
    try:
        data = blobs.get(key)
    except (FileNotFoundError, KeyError):
        return not_found(request)
    s.c.record(request, s.admin, tenant, "message.download", record.id, f"{len(data)} bytes")
    eml = delivered(blobs, Download("eml", f"{record.id}.eml", data), stored=key)
    if eml.url is not None:  # a large message goes from the raw bucket itself
        return refreshed(request, RedirectResponse(eml.url, status_code=303))
    # octet-stream + nosniff: the original is never rendered in the console's origin.
    response = Response(eml.data, media_type="application/octet-stream", headers={
        "Content-Disposition": content_disposition(eml.filename)})
    return refreshed(request, response)


@router.post("/t/{tenant}/messages/{message_id}/redrive")
def redrive_message(request: Request, tenant: str, message_id: str, s: PostedScope,
                    resend: str = Form("")) -> Response:
    record = message_of(s.c, tenant, message_id)
    if record is None:
        return not_found(request)
    if record.state not in REDRIVABLE_STATES:
        return redirect(request, f"/admin/t/{tenant}/messages/{record.id}")
    s.c.record(request, s.admin, tenant, "message.redrive", record.id,
               f"from {record.state}{', resend' if resend == '1' else ''}")
    outcome = redrive(s.c.runtime, record.id, resend=resend == "1")
    log.info("admin redrive", extra={"message_id": record.id, "tenant": tenant,
                                     "action": outcome.state if outcome else "missing"})
    return redirect(request, f"/admin/t/{tenant}/messages/{record.id}?done=redrive")


@router.get("/t/{tenant}/held", response_class=HTMLResponse)
def held(request: Request, tenant: str, s: TenantScope) -> Response:
    log_ = s.c.runtime.services.log
    rows = [_row(r) for state in sorted(REDRIVABLE_STATES)
            for r in log_.search(TraceQuery(tenant=tenant, state=state, limit=200))]
    rows.sort(key=lambda r: r["received_at"], reverse=True)
    return render(request, s.admin, s.cfg, "admin/held.html", {"rows": rows})


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _trace_query(tenant: str, form: dict[str, str], page_no: int) -> tuple[TraceQuery, list[str]]:
    problems: list[str] = []
    since, until = _day(form["since"]), _day(form["until"])
    if form["since"] and since is None:
        problems.append("since")
    if form["until"] and until is None:
        problems.append("until")
    for name, allowed in (("state", STATES), ("disposition", DISPOSITIONS), ("verdict", VERDICTS)):
        if form[name] and form[name] not in allowed:
            problems.append(name)
    query = TraceQuery(
        tenant=tenant, sender=form["sender"] or None, recipient=form["recipient"] or None,
        subject=form["subject"] or None,
        since=datetime.combine(since, time(), UTC) if since else None,
        # "until" is a day shown inclusive: everything before the next midnight (UTC).
        until=datetime.combine(until, time(), UTC) + timedelta(days=1) if until else None,
        state=form["state"] or None, disposition=form["disposition"] or None,
        verdict=form["verdict"] or None, symbol=form["symbol"].strip().upper() or None,
        limit=PAGE_SIZE + 1, offset=(page_no - 1) * PAGE_SIZE)
    return query, problems


def _row(record: MessageRecord) -> dict[str, Any]:
    report = record.report or {}
    verdicts = [a.get("verdict") for a in report.get("attachments", []) if isinstance(a, dict)]
    worst = next((v for v in reversed(VERDICTS) if v in verdicts), "")
    return {"id": record.id, "received_at": f"{record.received_at:%Y-%m-%d %H:%M:%S}",
            "mail_from": record.mail_from or "<>", "rcpt_to": ", ".join(record.rcpt_to[:5])
            + (" …" if len(record.rcpt_to) > 5 else ""), "subject": record.subject or "",
            "state": record.state, "disposition": record.disposition or "", "worst": worst,
            "attachments": len(verdicts), "error": record.error or ""}


def _detail(c: AdminConsole, record: MessageRecord) -> dict[str, Any]:
    report = record.report or {}
    logbook = c.runtime.services.log
    recorded = report.get("deliveries") or {}
    deliveries = [{"rcpt": r, "outcome": logbook.delivery_outcome(record.id, r) or recorded.get(r) or ""}
                  for r in record.rcpt_to]
    hops = [{"flag": flag(h.get("country")), "country": h.get("country") or "", "ip": h.get("ip") or "",
             "name": h.get("from") or "", "by": h.get("by") or ""}
            for h in report.get("route", []) if isinstance(h, dict)]
    stages = report.get("trace") or [{"stage": k, "duration_ms": v, "outcome": "ok", "detail": ""}
                                     for k, v in record.timings.items()]
    return {"r": record, "report": report, "auth": report.get("auth") or {}, "hops": hops,
            "countries": sorted({h["country"] for h in hops if h["country"]}),
            "findings": report.get("findings", []), "attachments": report.get("attachments", []),
            "stages": stages, "actions": report.get("actions", []), "deliveries": deliveries,
            "spam": report.get("spam") or {}, "from_header": report.get("from") or "",
            "has_raw": c.runtime.services.blobs.exists(record.raw_key or raw_key(record.id)),
            "redrivable": record.state in REDRIVABLE_STATES}
