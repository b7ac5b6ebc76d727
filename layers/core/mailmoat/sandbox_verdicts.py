"""The sandbox's later verdicts: files isolated as `analysing` are polled and decided.

Run by `mailmoat serve`'s schedule (local/schedule.py) and `mailmoat sandbox-poll`. For each
file that still has a sandbox ticket: clean → safe (downloadable; with the tenant's
`sandbox_release_clean` also mailed to the recipients); malicious or suspicious → danger, the
stored bytes deleted and the recipients told; no verdict by SandboxConfig.timeout_seconds →
SANDBOX_TIMEOUT, it stays isolated with no download and is not asked again. The score →
verdict thresholds are the tenant's (sandbox_danger_score …) whose message the file came in.
An attached message that left the mail with a file
still in the sandbox waits for its members' verdicts (_attached_message).
A sandbox that cannot answer is asked again at the next run. A decided file loses its ticket,
so a second run changes nothing.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

from mailmoat.context import Verdict
from mailmoat.ports import DeliveryError
from mailmoat.scan.result import verdict_of
from mailmoat.scan.sandbox import as_report, judged

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.isolation import IsolatedFile, PortalMessage
    from mailmoat.pipeline import Services
    from mailmoat.scan.sandbox import SandboxConfig

log = logging.getLogger("mailmoat.sandbox_verdicts")

MAX_PER_RUN = 200  # files asked per run; the rest wait for the next one (oldest first)

WORDS: dict[str, dict[str, str]] = {
    "ja": {
        "released_subject": "【添付ファイルのお届け】{subject}",
        "released": "解析の結果、安全と判定されたため添付ファイルをお届けします。",
        "deleted_subject": "【添付ファイルの削除】{subject}",
        "deleted": "サンドボックスでの解析の結果、以下の添付ファイルは危険と判定されたため削除されました。",
        "file": "ファイル名",
        "from": "差出人",
        "subject": "件名",
        "none": "（なし）",
    },
    "en": {
        "released_subject": "[Attachment delivered] {subject}",
        "released": "The attachment was analysed and judged safe, so it is delivered to you now.",
        "deleted_subject": "[Attachment deleted] {subject}",
        "deleted": "Analysis in a sandbox judged the following attachment dangerous; "
                   "it has been deleted.",
        "file": "File",
        "from": "From",
        "subject": "Subject",
        "none": "(none)",
    },
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(slots=True)
class SandboxRun:
    clean: int = 0
    danger: int = 0
    timed_out: int = 0
    waiting: int = 0
    errors: int = 0
    mailed: int = 0
    mail_failed: dict[str, str] = field(default_factory=dict)  # "<message id>/<path>" -> why

    def summary(self) -> str:
        return (f"{self.clean} clean, {self.danger} danger, {self.timed_out} timed out, "
                f"{self.waiting} waiting, {self.errors} errors, {self.mailed} mailed")


def sandbox_verdicts(services: Services, now: datetime | None = None, *,
                     stop: Callable[[], bool] | None = None) -> SandboxRun:
    """Poll every file waiting for its sandbox verdict once, and carry the verdicts out.
    `stop`, asked before each file: True ends the run there (the AWS poller's time budget)."""
    now = now or services.clock.now()
    run = SandboxRun()
    store, sandbox = services.isolation, services.sandbox
    if store is None:
        return run
    for record in store.analysing(MAX_PER_RUN):
        if stop is not None and stop():
            break  # the rest wait for the next run (oldest first)
        ticket = record.sandbox_ticket
        if not ticket:
            continue
        submitted = _aware(record.sandbox_submitted_at or now)
        past_timeout = (_aware(now) - submitted).total_seconds() >= \
            services.sandbox_config.timeout_seconds
        if any(m.get("sandbox_ticket") for m in record.members):
            _attached_message(services, record, past_timeout, run)
            continue
        answered, outcome = False, None
        if sandbox is not None:
            try:
                report = as_report(sandbox.poll(ticket))
                if report is not None:
                    answered, outcome = True, judged(ticket, report, _config_for(services, record))
            except Exception as exc:  # asked again next run; the file stays isolated meanwhile
                run.errors += 1
                log.warning("sandbox poll failed", extra={
                    "message_id": record.message_id, "stage": "sandbox-poll",
                    "symbol": "SCAN_FAILED", "detail": f"{type(exc).__name__}: {exc}"[:200]})
        if outcome is not None and outcome[0] == "SCAN_FAILED":
            run.errors += 1  # an unknown word from the backend is no verdict: ask again
            log.warning("sandbox gave no usable verdict", extra={
                "message_id": record.message_id, "stage": "sandbox-poll", "symbol": "SCAN_FAILED"})
            answered, outcome = False, None
        if answered and outcome is None:
            _clean(services, record, run)
        elif outcome is not None:
            _danger(services, record, outcome[0], run)
        elif past_timeout:
            store.update_file(replace(record, sandbox_ticket=None,
                                      symbols=_with(record.symbols, "SANDBOX_TIMEOUT")))
            run.timed_out += 1
            log.info("sandbox timed out", extra={"message_id": record.message_id,
                                                 "stage": "sandbox-poll",
                                                 "symbol": "SANDBOX_TIMEOUT"})
        else:
            run.waiting += 1
    if run.clean or run.danger or run.timed_out or run.errors:
        log.info("sandbox verdicts", extra={"stage": "sandbox-poll", "action": run.summary()})
    return run


def _attached_message(services: Services, record: IsolatedFile, past_timeout: bool,
                      run: SandboxRun) -> None:
    """An attached message waiting for the files inside it (stages/isolate.py _keep_for_portal):
    each member still analysing is decided from its ticket's answer; any danger → the message is
    danger (deleted, the recipients told); all decided → the worst of its members' verdicts, as
    the scan judges an attached message; a member past the timeout → SANDBOX_TIMEOUT on the
    message, which stays isolated. Undecided members' progress is kept, so reruns change nothing."""
    assert services.isolation is not None
    members = [dict(m) for m in record.members]
    config = _config_for(services, record)
    changed = False
    for member in members:
        ticket = member.get("sandbox_ticket")
        if not ticket:
            continue
        answer = _answer(services, record, str(ticket), config, run)
        if answer is None:
            continue
        symbols = [s for s in member.get("symbols", []) if s != "SANDBOX_ANALYSING"]
        if answer == "clean":
            member["symbols"] = _with(symbols, "SANDBOX_CLEAN")
            member["verdict"] = str(_clean_verdict(member["symbols"]))
        else:
            member["symbols"] = _with(symbols, answer)
            member["verdict"] = str(Verdict.DANGER)
        del member["sandbox_ticket"]
        changed = True
    danger = next((m for m in members if m.get("verdict") == Verdict.DANGER
                   and any(s.startswith("SANDBOX_") for s in m.get("symbols", []))), None)
    waiting = [m for m in members if m.get("sandbox_ticket")]
    if danger is not None:
        symbol = next(s for s in reversed(danger["symbols"]) if s.startswith("SANDBOX_"))
        _danger(services, replace(record, members=members), symbol, run,
                name=f"{record.filename} › {danger.get('name', '')}")
    elif waiting and past_timeout:
        for member in waiting:
            member["symbols"] = _with(list(member.get("symbols", [])), "SANDBOX_TIMEOUT")
            del member["sandbox_ticket"]
        services.isolation.update_file(replace(record, members=members, sandbox_ticket=None,
                                               symbols=_with(record.symbols, "SANDBOX_TIMEOUT")))
        run.timed_out += 1
        log.info("sandbox timed out", extra={"message_id": record.message_id,
                                             "stage": "sandbox-poll", "symbol": "SANDBOX_TIMEOUT"})
    elif waiting:
        if changed:  # the members decided so far are kept; the next run asks only the others
            services.isolation.update_file(replace(record, members=members))
        run.waiting += 1
    else:
        verdict = Verdict.worst([Verdict(m.get("verdict", Verdict.SAFE)) for m in members])
        symbols = [s for s in record.symbols if s != "SANDBOX_ANALYSING"]
        for member in members:
            for symbol in member.get("symbols", []):
                symbols = _with(symbols, symbol)
        decided = replace(record, verdict=verdict, symbols=symbols, members=members,
                          sandbox_ticket=None)
        services.isolation.update_file(decided)
        run.clean += 1
        log.info("sandbox clean", extra={"message_id": record.message_id,
                                         "stage": "sandbox-poll", "symbol": "SANDBOX_CLEAN"})
        message = services.isolation.message(record.message_id)
        if message is None or decided.blob_key is None or verdict != Verdict.SAFE:
            return
        tenant = services.config.tenant(message.tenant)
        if tenant.sandbox_release_clean and not _enclosed(services, decided):
            _mail(services, tenant, message, decided, run, "released",
                  services.blobs.get(decided.blob_key))


def _answer(services: Services, record: IsolatedFile, ticket: str, config: SandboxConfig,
            run: SandboxRun) -> str | None:
    """One member's answer: "clean", a danger symbol, or None (no usable verdict yet)."""
    if services.sandbox is None:
        return None
    try:
        report = as_report(services.sandbox.poll(ticket))
    except Exception as exc:  # asked again next run; the message stays isolated meanwhile
        run.errors += 1
        log.warning("sandbox poll failed", extra={
            "message_id": record.message_id, "stage": "sandbox-poll",
            "symbol": "SCAN_FAILED", "detail": f"{type(exc).__name__}: {exc}"[:200]})
        return None
    if report is None:
        return None
    outcome = judged(ticket, report, config)
    if outcome is None:
        return "clean"
    if outcome[0] == "SCAN_FAILED":
        run.errors += 1
        log.warning("sandbox gave no usable verdict", extra={
            "message_id": record.message_id, "stage": "sandbox-poll", "symbol": "SCAN_FAILED"})
        return None
    return outcome[0]


def _clean_verdict(symbols: list[str]) -> Verdict:
    # The sandbox ran it and saw nothing: what the static checks only suspected (risky) is
    # now safe; what they could not look into (encrypted, unsupported) stays so.
    before = verdict_of(symbols)
    return Verdict.SAFE if before in (Verdict.SAFE, Verdict.RISKY) else before


def _enclosed(services: Services, record: IsolatedFile) -> bool:
    """The file is inside an attached message whose record tracks it: that record's notice
    (naming the message and the file) tells the recipients, not this one's."""
    assert services.isolation is not None
    return any(record.path.startswith(f.path + ".")
               and any(m.get("path") == record.path for m in f.members)
               for f in services.isolation.files(record.message_id))


def _config_for(services: Services, record: IsolatedFile) -> SandboxConfig:
    """The sandbox config with the thresholds of the tenant the file's message came to."""
    assert services.isolation is not None
    message = services.isolation.message(record.message_id)
    tenant = services.config.tenant(message.tenant if message is not None else None)
    return services.sandbox_config.for_tenant(tenant)


def _clean(services: Services, record: IsolatedFile, run: SandboxRun) -> None:
    symbols = _with([s for s in record.symbols if s != "SANDBOX_ANALYSING"], "SANDBOX_CLEAN")
    verdict = _clean_verdict(symbols)
    decided = replace(record, verdict=verdict, symbols=symbols, sandbox_ticket=None)
    assert services.isolation is not None
    services.isolation.update_file(decided)
    run.clean += 1
    log.info("sandbox clean", extra={"message_id": record.message_id, "stage": "sandbox-poll",
                                     "symbol": "SANDBOX_CLEAN"})
    message = services.isolation.message(record.message_id)
    if message is None or decided.blob_key is None:
        return
    tenant = services.config.tenant(message.tenant)
    if not tenant.sandbox_release_clean or verdict != Verdict.SAFE or _enclosed(services, record):
        return  # downloadable in the portal; the recipient fetches it there
    data = services.blobs.get(decided.blob_key)
    _mail(services, tenant, message, decided, run, "released", data)


def _danger(services: Services, record: IsolatedFile, symbol: str, run: SandboxRun,
            name: str | None = None) -> None:
    # The bytes go first: whatever happens to the notice, nobody can download the file now.
    if record.blob_key is not None:
        services.blobs.delete(record.blob_key)
    decided = replace(record, verdict=Verdict.DANGER, action="delete", blob_key=None,
                      sandbox_ticket=None,
                      symbols=_with([s for s in record.symbols if s != "SANDBOX_ANALYSING"], symbol))
    assert services.isolation is not None
    services.isolation.update_file(decided)
    run.danger += 1
    log.info("sandbox danger: file deleted", extra={
        "message_id": record.message_id, "stage": "sandbox-poll", "symbol": symbol,
        "action": "delete"})
    message = services.isolation.message(record.message_id)
    if message is not None and not _enclosed(services, record):
        _mail(services, services.config.tenant(message.tenant), message, decided, run, "deleted",
              name=name)


def _mail(services: Services, tenant: TenantConfig, message: PortalMessage, record: IsolatedFile,
          run: SandboxRun, kind: str, data: bytes | None = None, name: str | None = None) -> None:
    """The gateway's own mail about one file to each recipient of its message (the portal
    links say who they are). A failed delivery is logged; the portal shows the same state."""
    assert services.isolation is not None
    recipients = sorted({link.recipient for link in services.isolation.links(record.message_id)
                         if link.recipient})
    for recipient in recipients:
        msg = build_notice(services, tenant, message, record, recipient, kind, data, name=name)
        try:
            services.own_mail_for(tenant).deliver(
                f"sandbox-{kind}-{record.message_id}", recipient, services.settings.postmaster,
                msg.as_bytes(policy=SMTP))
        except DeliveryError as exc:
            run.mail_failed[f"{record.message_id}/{record.path}"] = str(exc)[:300]
            log.warning("sandbox notice not sent", extra={
                "message_id": record.message_id, "tenant": tenant.name, "stage": "sandbox-poll",
                "action": kind})
            continue
        run.mailed += 1


def build_notice(services: Services, tenant: TenantConfig, message: PortalMessage,
                 record: IsolatedFile, recipient: str, kind: str,
                 data: bytes | None = None, *, name: str | None = None) -> EmailMessage:
    """The release ("released", the file attached under its original name) or the deletion
    notice ("deleted"; `name` shown instead of the file's, e.g. "message.eml › a.exe"): text and
    HTML, every value from the mail escaped."""
    words = WORDS.get(tenant.language, WORDS["ja"])
    settings = services.settings
    name = _CONTROL.sub("", name or record.filename)[:300] or "attachment"
    subject = _CONTROL.sub("", message.subject or "")[:200]
    sender = _CONTROL.sub("", message.from_header or message.mail_from or "")[:300]
    msg = EmailMessage()
    msg["From"] = settings.postmaster
    msg["To"] = recipient
    msg["Subject"] = words[f"{kind}_subject"].format(subject=subject or words["none"])
    msg["Date"] = format_datetime(services.clock.now())
    msg["Message-ID"] = make_msgid(domain=settings.smtp_hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    lines = [(words["file"], name), (words["from"], sender or words["none"]),
             (words["subject"], subject or words["none"])]
    text = [words[kind], ""] + [f"{k}: {v}" for k, v in lines]
    msg.set_content("\n".join(text) + "\n", charset="utf-8")
    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in lines)
    msg.add_alternative(
        f'<!doctype html><html lang="{e(tenant.language)}"><head><meta charset="utf-8"></head>'
        f"<body><p>{e(words[kind])}</p><table>{rows}</table></body></html>",
        subtype="html", charset="utf-8")
    if data is not None:
        maintype, _, subtype = (record.declared_type or "").partition("/")
        if not (maintype.isascii() and subtype.isascii() and maintype and subtype
                and "/" not in subtype) or maintype in ("multipart", "message"):
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(data, maintype=maintype.lower(), subtype=subtype.lower().split(";")[0],
                           filename=name)
    return msg


def _with(symbols: list[str], symbol: str) -> list[str]:
    return symbols if symbol in symbols else [*symbols, symbol]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_sandbox_commands(sub: Any) -> None:
    p = sub.add_parser("sandbox-poll",
                       help="ask the sandbox about the files isolated as analysing, once")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sandbox_poll)


def cmd_sandbox_poll(args: argparse.Namespace) -> int:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.cli import _settings

    runtime = bootstrap(_settings(args))
    run = sandbox_verdicts(runtime.services)
    if args.json:
        print(json.dumps({"clean": run.clean, "danger": run.danger, "timed_out": run.timed_out,
                          "waiting": run.waiting, "errors": run.errors, "mailed": run.mailed,
                          "mail_failed": run.mail_failed}, ensure_ascii=False))
    else:
        print(run.summary())
    return 1 if run.errors or run.mail_failed else 0
