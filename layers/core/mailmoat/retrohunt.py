"""Retro-hunt: after the antivirus signatures or YARA rules change, scan the files we still hold
(and what a password from mail opened) again; one that is danger now loses its download, and
the recipients who took it and the tenant's admins are told (issue 17, item 2)."""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
import time
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

from mailmoat.context import Verdict

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.isolation import DownloadRecord, IsolatedFile
    from mailmoat.pipeline import Services
    from mailmoat.ports import IsolationStore
    from mailmoat.ppap import OpenedFile, OpenedMember
    from mailmoat.scan.engine import Engine
    from mailmoat.scan.result import FileResult

log = logging.getLogger("mailmoat.retrohunt")

STATE_KEY = "state"  # the signature state the last complete retro-hunt ran under
SYMBOL = "RETROHUNT"  # added to a record this turned danger
NOTIFIED_DAYS = 400  # how long "this address was told about this file" is remembered


# --- the signature state ------------------------------------------------------------------------

def signature_state(services: Services) -> str | None:
    """clamd's version (its database version and date) + the YARA rules version: what a scan
    would find. None when the antivirus is configured but does not answer (no run on that)."""
    from mailmoat.scan import yara_rules

    av = "none"
    version = getattr(services.antivirus, "version", None)
    if services.antivirus is not None and callable(version):
        try:
            av = str(version()).strip()[:200]
        except Exception as exc:  # no answer: the state is unknown, not "changed"
            log.warning("retrohunt: antivirus version unavailable: %s", type(exc).__name__)
            return None
    elif services.antivirus is not None:
        av = type(services.antivirus).__name__
    return f"av={av};yara={yara_rules.rules_version()}"


# --- the report ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Turned:
    """One file (or a member a password opened) that is danger now."""

    message_id: str
    path: str
    filename: str
    was: str
    symbols: list[str]
    member: str | None = None
    found: list[str] = field(default_factory=list)  # "SYMBOL: detail" of what the scan found
    notified: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RetrohuntReport:
    state: str | None
    since: datetime
    scanned: int = 0
    turned: list[Turned] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)  # SCAN_FAILED: message_id, path, detail
    skipped: int = 0  # over the file cap or the time budget: next run
    notices_sent: int = 0
    notices_failed: int = 0
    ran: bool = True  # False: the scheduled check found the state unchanged

    @property
    def complete(self) -> bool:
        return self.skipped == 0

    def summary(self) -> str:
        if not self.ran:
            return "signature state unchanged: no retro-hunt"
        return (f"{self.scanned} files rescanned, {len(self.turned)} now danger, "
                f"{len(self.failed)} failed, {self.skipped} left for the next run, "
                f"{self.notices_sent} notices sent, {self.notices_failed} not sent")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since.isoformat()
        data["complete"] = self.complete
        return data


# --- the run ------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Target:
    record: IsolatedFile
    tenant: TenantConfig
    key: str
    filename: str
    member: OpenedMember | None = None
    opened: OpenedFile | None = None


def retrohunt(services: Services, *, since: datetime | None, now: datetime,
              state: str | None = None) -> RetrohuntReport:
    """Scan again every held file, every file downloaded since `since` (None: each tenant's
    `retrohunt_days`) and the members a password opened, with the current engine and no
    cached results. Bounded by `retrohunt_max_files` and `retrohunt_seconds`."""
    from mailmoat.scan.engine import CACHE, ResultCache, engine_for

    store = services.isolation
    if store is None:
        raise RuntimeError("no isolation store in this runtime")
    settings = services.settings
    tenants = services.config.tenants
    widest = max([t.retrohunt_days for t in tenants] or [14])
    start = since if since is not None else now - timedelta(days=widest)
    report = RetrohuntReport(state=state, since=start)
    CACHE.clear()  # results cached under the old signatures must not answer for the new ones
    # Own cache (a file in two messages is scanned once) and no sandbox (no second detonation).
    engine = replace(engine_for(services), cache=ResultCache(), sandbox=None)
    cap = settings.retrohunt_max_files
    downloads = store.downloaded_since(start, cap * 10)
    by_file: dict[tuple[str, str], list[DownloadRecord]] = {}
    for d in downloads:
        by_file.setdefault((d.message_id, d.path), []).append(d)
    records = {(f.message_id, f.path): f for f in store.held_files(now, cap)}
    for message_id, path in by_file:
        if (message_id, path) not in records:
            found = next((f for f in store.files(message_id) if f.path == path), None)
            if found is not None and found.expires_at > now:  # members a password opened too
                records[(message_id, path)] = found
    targets = _targets(services, store, list(records.values()))
    deadline = time.monotonic() + settings.retrohunt_seconds
    for index, target in enumerate(targets):
        if index >= cap or time.monotonic() > deadline:
            report.skipped = len(targets) - index
            log.warning("retrohunt bounded", extra={"action": "retrohunt", "count": report.skipped})
            break
        _one(services, store, engine, target, by_file, since, now, report)
    log.info("retrohunt", extra={"action": "retrohunt", "count": report.scanned,
                                 "detail": report.summary()})
    return report


def _targets(services: Services, store: IsolationStore,
             records: list[IsolatedFile]) -> list[_Target]:
    targets: list[_Target] = []
    for record in sorted(records, key=lambda r: r.expires_at, reverse=True):  # newest first
        message = store.message(record.message_id)
        tenant = services.config.tenant(message.tenant if message else None)
        if record.blob_key is not None and record.verdict != Verdict.DANGER:
            targets.append(_Target(record, tenant, record.blob_key, record.filename))
        opened = store.opened(record.message_id, record.path)
        for member in opened.members if opened is not None else []:
            if member.blob_key and member.verdict != Verdict.DANGER:
                targets.append(_Target(record, tenant, member.blob_key, member.name,
                                       member=member, opened=opened))
    return targets


def _one(services: Services, store: IsolationStore, engine: Engine, target: _Target,
         by_file: dict[tuple[str, str], list[DownloadRecord]], since: datetime | None,
         now: datetime, report: RetrohuntReport) -> None:
    from mailmoat.scan.engine import monotonic_deadline
    from mailmoat.scan.lists import Lists

    record = target.record
    report.scanned += 1
    result: FileResult | None = None
    try:
        data = services.blobs.get(target.key)
        result = engine.analyse(data, target.filename, Lists.for_tenant(target.tenant),
                                deadline=monotonic_deadline(services.settings.limits))
    except Exception as exc:  # hostile bytes or a missing blob: recorded, the run goes on
        detail = f"{type(exc).__name__}: {exc}"[:300]
    else:
        failed = [h.detail for h in result.hits if h.symbol == "SCAN_FAILED"]
        detail = failed[0][:300] if failed else ""
    if detail:
        report.failed.append({"message_id": record.message_id, "path": record.path,
                              "member": target.member.name if target.member else "",
                              "symbol": "SCAN_FAILED", "detail": detail})
        log.warning("retrohunt scan failed", extra={"message_id": record.message_id,
                                                    "symbol": "SCAN_FAILED", "path": record.path})
    if result is None or result.verdict != Verdict.DANGER:
        return
    symbols = [s for s in result.symbols if s != "SCAN_FAILED"] + [SYMBOL]
    was = str(target.member.verdict if target.member else record.verdict)
    found = [f"{h.symbol}: {h.detail}" if h.detail else h.symbol for h in result.hits
             if h.symbol != "SCAN_FAILED"][:20]
    turned = Turned(record.message_id, record.path, target.filename, was, symbols,
                    member=target.member.name if target.member else None, found=found)
    # First the record (the portal refuses at once), then the bytes, then the notices.
    if target.member is not None and target.opened is not None:
        target.member.verdict, target.member.blob_key = Verdict.DANGER, None
        target.member.symbols = sorted(set(target.member.symbols) | set(symbols))
        store.set_opened(target.opened, record.expires_at)
    else:
        store.mark_danger(record.message_id, record.path, symbols)
    try:
        services.blobs.delete(target.key)
    except Exception:  # the record refuses the download already; the sweep or lifecycle ends it
        log.warning("retrohunt: blob not deleted", extra={"message_id": record.message_id})
    log.warning("retrohunt: file is danger now", extra={
        "message_id": record.message_id, "tenant": target.tenant.name, "path": record.path,
        "action": "retrohunt", "symbol": ",".join(symbols)[:300]})
    report.turned.append(turned)
    window = since if since is not None else now - timedelta(days=target.tenant.retrohunt_days)
    taken = [d for d in by_file.get((record.message_id, record.path), [])
             if d.at >= window and _same_item(d.kind, target.member.name if target.member else None)]
    _notify(services, store, target.tenant, turned, taken, now, report)


def _same_item(kind: str, member: str | None) -> bool:
    """Whether a download record (its kind) took this item: the file itself, or one member."""
    opened = kind.startswith("opened")
    if member is None:
        return not opened
    return opened and (kind in ("opened", f"opened:{member}"))


# --- the notices --------------------------------------------------------------------------------

WORDS: dict[str, dict[str, str]] = {
    "ja": {
        "subject": "【重要】ダウンロードされたファイルに危険が見つかりました",
        "intro": "以前に隔離ポータルからダウンロードされたファイルを、更新された検査定義で"
                 "再検査したところ、危険と判定されました。このファイルはもうダウンロードできません。"
                 "ファイルを開いていた場合は、システム管理者に連絡してください。",
        "intro_admin": "隔離ポータルからダウンロードされたファイルを、更新された検査定義で再検査"
                       "したところ、危険と判定されました。ダウンロードは止めています。",
        "file": "ファイル名",
        "taken": "ダウンロード日時",
        "who": "ダウンロードした人",
        "found": "検出内容",
        "message": "メッセージ ID",
        "none": "（なし）",
        "footer": "このメールは mailmoat が自動で送信しています。",
    },
    "en": {
        "subject": "Important: a file you downloaded was found dangerous",
        "intro": "A file downloaded from the quarantine portal was scanned again with updated "
                 "signatures and is now judged dangerous. It can no longer be downloaded. If "
                 "you opened it, contact your system administrator.",
        "intro_admin": "A file downloaded from the quarantine portal was scanned again with "
                       "updated signatures and is now judged dangerous. Its download is stopped.",
        "file": "File name",
        "taken": "Downloaded at",
        "who": "Downloaded by",
        "found": "Found",
        "message": "Message ID",
        "none": "(none)",
        "footer": "This message was sent automatically by mailmoat.",
    },
}


def shown(text: str, limit: int = 300) -> str:
    """A hostile name made one inert line: control characters (CR, LF, NUL, bidi overrides)
    become U+FFFD, then cut to `limit` characters."""
    clean = "".join("\ufffd" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)
    return clean[:limit]


def build_notice(services: Services, tenant: TenantConfig, to: str, turned: Turned,
                 taken: list[DownloadRecord], *, admin: bool, now: datetime) -> EmailMessage:
    """One notice (text and HTML, every value escaped; the file name only in the body)."""
    settings = services.settings
    words = WORDS.get(tenant.language, WORDS["ja"])
    msg = EmailMessage()
    msg["From"] = settings.postmaster
    msg["To"] = to
    msg["Subject"] = words["subject"]
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=settings.smtp_hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    name = shown(turned.filename)
    found = "; ".join(shown(f, 200) for f in turned.found or turned.symbols) or words["none"]
    rows = [(words["file"], name)]
    for d in taken:
        when = d.at.astimezone().strftime("%Y-%m-%d %H:%M %Z")
        rows.append((words["taken"], f"{when} ({shown(d.recipient, 200)})" if admin else when))
    if not taken:
        rows.append((words["taken"], words["none"]))
    rows += [(words["found"], found), (words["message"], shown(turned.message_id, 200))]
    intro = words["intro_admin"] if admin else words["intro"]
    text = [intro, ""] + [f"{k}: {v}" for k, v in rows] + ["", "--", words["footer"]]
    msg.set_content("\n".join(text) + "\n", charset="utf-8")
    e = html.escape
    cells = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    msg.add_alternative(
        f'<!doctype html><html lang="{e(tenant.language)}"><head><meta charset="utf-8"></head>'
        f'<body><p>{e(intro)}</p><table border="1" cellpadding="4" cellspacing="0">{cells}'
        f"</table><p>{e(words['footer'])}</p></body></html>", subtype="html", charset="utf-8")
    return msg


def admin_addresses(services: Services, tenant: TenantConfig) -> list[str]:
    """The tenant's admin accounts (console accounts for this tenant that are addresses and
    not disabled) and its `admin_notice_addresses`, lower-cased, once each."""
    from mailmoat.admin.accounts import _EMAIL

    found = [a.lower() for a in tenant.admin_notice_addresses]
    accounts = services.admin.accounts
    if accounts is not None:
        try:
            found += [a.email.lower() for a in accounts.accounts()
                      if a.tenant == tenant.name and not a.disabled and _EMAIL.match(a.email)]
        except Exception:  # the notices to the downloaders still go
            log.warning("retrohunt: admin accounts unavailable", extra={"tenant": tenant.name})
    return list(dict.fromkeys(found))


def _notify(services: Services, store: IsolationStore, tenant: TenantConfig, turned: Turned,
            taken: list[DownloadRecord], now: datetime, report: RetrohuntReport) -> None:
    from mailmoat.ports import DeliveryError

    by_recipient: dict[str, list[DownloadRecord]] = {}
    for d in taken:
        by_recipient.setdefault(d.recipient.lower(), []).append(d)
    mails = [(r, ds, False) for r, ds in by_recipient.items()]
    mails += [(a, taken, True) for a in admin_addresses(services, tenant)]
    item = f"{turned.message_id}#{turned.path}#{turned.member or ''}"
    remember = now + timedelta(days=NOTIFIED_DAYS)
    for to, records, admin in mails:
        key = f"notified#{item}#{to}"
        if store.get_marker(key) is not None:
            continue  # told already (an earlier run)
        msg = build_notice(services, tenant, to, turned, records, admin=admin, now=now)
        inside = to.rpartition("@")[2] in tenant.domains
        mailer = (services.own_mail_for if inside else services.outside_mail_for)(tenant)
        try:
            mailer.deliver(f"retrohunt-{turned.message_id}", to, services.settings.postmaster,
                           msg.as_bytes(policy=SMTP))
        except (DeliveryError, OSError) as exc:
            report.notices_failed += 1
            log.warning("retrohunt notice not sent", extra={
                "message_id": turned.message_id, "tenant": tenant.name,
                "detail": type(exc).__name__})
            continue
        store.put_marker(key, now.isoformat(), remember)
        turned.notified.append(to)
        report.notices_sent += 1


# --- the trigger --------------------------------------------------------------------------------

def scheduled_retrohunt(services: Services, now: datetime) -> RetrohuntReport | None:
    """The scheduled check (locally every few minutes, on AWS after the signature update): a
    retro-hunt only when the signature state differs from the last complete run's."""
    store = services.isolation
    if store is None:
        return None
    state = signature_state(services)
    if state is None:
        return None
    if store.get_marker(STATE_KEY) == state:
        return RetrohuntReport(state=state, since=now, ran=False)
    return run_and_remember(services, since=None, now=now, state=state)


def run_and_remember(services: Services, *, since: datetime | None, now: datetime,
                     state: str | None) -> RetrohuntReport:
    report = retrohunt(services, since=since, now=now, state=state)
    if state is not None and report.complete and services.isolation is not None:
        # Only a complete run settles the state: a bounded one goes on at the next check.
        services.isolation.put_marker(STATE_KEY, state, None)
    return report


# --- the command --------------------------------------------------------------------------------

def add_retrohunt_commands(sub: Any) -> None:
    p = sub.add_parser("retrohunt", help="scan held and recently downloaded files again "
                                         "with the current signatures and rules")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--since", default=None, help="downloads since this time (ISO 8601)")
    when.add_argument("--days", type=int, default=None, help="downloads in the last N days")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retrohunt)


def cmd_retrohunt(args: argparse.Namespace) -> int:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.cli import _settings

    runtime = bootstrap(_settings(args))
    services = runtime.services
    now = services.clock.now()
    since: datetime | None = None
    try:
        if args.since:
            since = datetime.fromisoformat(args.since)
            since = since if since.tzinfo else since.replace(tzinfo=now.tzinfo)
        elif args.days is not None:
            since = now - timedelta(days=max(0, args.days))
    except ValueError:
        print(f"mailmoat: not an ISO 8601 time: {args.since!r}", file=sys.stderr)
        return 2
    report = run_and_remember(services, since=since, now=now, state=signature_state(services))
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(report.summary())
        for t in report.turned:
            print(f"danger now: {t.message_id} {t.path} {shown(t.member or t.filename)}: "
                  f"{', '.join(t.symbols)}")
    return 0
