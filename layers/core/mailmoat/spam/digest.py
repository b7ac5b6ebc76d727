"""The daily spam digest: one mail per recipient listing their newly held copies, with signed links.

Each link opens a small page (web/mailmoat_web/spam.py) with one button: release, or allow the
sender (and release). Links are signed with itsdangerous (URLSafeTimedSerializer) and valid
for the tenant's retention, as long as the held copy lives; the signing key is generated once
under the data directory (0600), or given by MAILMOAT_SPAM_LINK_SECRET_FILE.
"""

from __future__ import annotations

import html
import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from mailmoat.ports import DeliveryError
from mailmoat.spam.quarantine import HeldMessage, sweep

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.pipeline import Services
    from mailmoat.settings import Settings

log = logging.getLogger("mailmoat.spam")

ACTIONS = ("release", "allow")
_SALT = "mailmoat.spam-digest.v1"
MAX_LISTED = 200  # rows in one digest; the rest are in the next one


# --- signed links ----------------------------------------------------------------------------

def link_secret(settings: Settings) -> bytes:
    """The digest links' signing key: the configured file (on AWS the composition root writes the
    stack's secret to one), else generated once (0600) under the data directory. Never logged;
    rotating it invalidates every outstanding link."""
    path = settings.spam_link_secret_file
    if path is None:
        if not settings.generate_keys:
            raise RuntimeError("no spam link key configured (MAILMOAT_SPAM_LINK_SECRET_FILE or, "
                               "on AWS, MAILMOAT_SPAM_LINK_SECRET_ARN)")
        path = settings.data_dir / "spam" / "link-secret"
        if not path.exists():
            _create_secret(path)
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise RuntimeError(f"spam link key in {path} is shorter than 32 bytes")
    return secret


def _create_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first: use theirs
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(link_secret(settings), salt=_SALT)


def sign_link(settings: Settings, action: str, message_id: str, recipient: str) -> str:
    if action not in ACTIONS:
        raise ValueError(action)
    token = _serializer(settings).dumps({"a": action, "m": message_id, "r": recipient.lower()})
    return f"{settings.portal_url.rstrip('/')}/s/{token}"


@dataclass(frozen=True, slots=True)
class LinkClaim:
    action: str
    message_id: str
    recipient: str


def read_link(settings: Settings, token: str, max_age_days: int) -> LinkClaim | None:
    """The claim a token carries, or None when it is forged, altered or older than allowed."""
    if len(token) > 1000:
        return None
    try:
        data: Any = _serializer(settings).loads(token, max_age=max_age_days * 86400)
    except (BadSignature, ValueError, TypeError):  # SignatureExpired is a BadSignature
        return None
    if not isinstance(data, dict):
        return None
    action, message_id, recipient = data.get("a"), data.get("m"), data.get("r")
    if action not in ACTIONS or not isinstance(message_id, str) or not isinstance(recipient, str):
        return None
    return LinkClaim(action, message_id, recipient)


# --- the digest mail -------------------------------------------------------------------------

WORDS: dict[str, dict[str, str]] = {
    "ja": {
        "subject": "【迷惑メール】隔離されたメッセージ {count} 件",
        "intro": "以下のメッセージは迷惑メールと判定され、隔離されています。"
                 "必要なメッセージは「受信する」を押すと受信トレイに届きます。"
                 "隔離されたメッセージは {days} 日後に削除されます。",
        "date": "日時",
        "from": "差出人",
        "subject_col": "件名",
        "score": "スコア",
        "release": "受信する",
        "allow": "この差出人を常に許可して受信する",
        "more": "ほかに {count} 件あります。次回のお知らせに記載します。",
        "footer": "このメールは mailmoat が自動で送信しています。",
        "none": "（なし）",
    },
    "en": {
        "subject": "Spam quarantine: {count} message(s) held",
        "intro": "The messages below were judged to be spam and are held. Press \"Release\" "
                 "to have one delivered to your inbox. Held messages are deleted after "
                 "{days} days.",
        "date": "Date",
        "from": "From",
        "subject_col": "Subject",
        "score": "Score",
        "release": "Release",
        "allow": "Always allow this sender and release",
        "more": "{count} more are held; they will be in the next digest.",
        "footer": "This message was sent automatically by mailmoat.",
        "none": "(none)",
    },
}


@dataclass(slots=True)
class DigestRow:
    held: HeldMessage
    release_url: str
    allow_url: str


def _when(held: HeldMessage) -> str:
    return held.held_at.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _score(held: HeldMessage) -> str:
    return "-" if held.score is None else f"{held.score:.1f}"


def build_digest(settings: Settings, tenant: TenantConfig, recipient: str,
                 rows: list[DigestRow], *, more: int = 0, now: datetime) -> EmailMessage:
    """The digest for one recipient: text and HTML alternatives, every value escaped."""
    words = WORDS.get(tenant.language, WORDS["ja"])
    msg = EmailMessage()
    msg["From"] = settings.postmaster
    msg["To"] = recipient
    msg["Subject"] = words["subject"].format(count=len(rows) + more)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=settings.smtp_hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    msg["Precedence"] = "bulk"
    intro = words["intro"].format(days=tenant.retention_days)
    none = words["none"]
    text = [intro, ""]
    for row in rows:
        held = row.held
        text += [f"{words['date']}: {_when(held)}",
                 f"{words['from']}: {held.from_header or held.mail_from or none}",
                 f"{words['subject_col']}: {held.subject or none}",
                 f"{words['score']}: {_score(held)}",
                 f"{words['release']}: {row.release_url}",
                 f"{words['allow']}: {row.allow_url}", ""]
    if more:
        text += [words["more"].format(count=more), ""]
    text += ["--", words["footer"]]
    msg.set_content("\n".join(text) + "\n", charset="utf-8")

    e = html.escape
    cells = "".join(
        f"<tr><td>{e(_when(r.held))}</td><td>{e(r.held.from_header or r.held.mail_from or none)}</td>"
        f"<td>{e(r.held.subject or none)}</td><td>{e(_score(r.held))}</td>"
        f'<td><a href="{e(r.release_url)}">{e(words["release"])}</a><br>'
        f'<a href="{e(r.allow_url)}">{e(words["allow"])}</a></td></tr>'
        for r in rows)
    more_html = f"<p>{e(words['more'].format(count=more))}</p>" if more else ""
    body = (f'<!doctype html><html lang="{e(tenant.language)}"><head><meta charset="utf-8"></head>'
            f"<body><p>{e(intro)}</p>"
            f'<table border="1" cellpadding="4" cellspacing="0"><tr><th>{e(words["date"])}</th>'
            f'<th>{e(words["from"])}</th><th>{e(words["subject_col"])}</th>'
            f'<th>{e(words["score"])}</th><th></th></tr>{cells}</table>{more_html}'
            f"<p>{e(words['footer'])}</p></body></html>")
    msg.add_alternative(body, subtype="html", charset="utf-8")
    return msg


@dataclass(slots=True)
class DigestRun:
    sent: dict[str, int] = field(default_factory=dict)  # recipient -> messages listed
    failed: dict[str, str] = field(default_factory=dict)  # recipient -> why
    swept: int = 0


def send_digests(services: Services, now: datetime | None = None, *,
                 tenant: str | None = None) -> DigestRun:
    """The one entry point the daily schedule calls (locally `mailmoat spam digest`, on AWS a
    scheduled function): sweep expired copies, then mail each recipient the copies held since
    their last digest. A recipient whose digest could not be sent gets those rows next time."""
    now = now or services.clock.now()
    run = DigestRun(swept=sweep(services, now))
    store = services.spam
    if store is None:
        raise RuntimeError("no spam quarantine store in this runtime")
    pending: dict[str, list[HeldMessage]] = {}
    for held in store.pending_digest(now, tenant):
        pending.setdefault(held.recipient, []).append(held)
    settings = services.settings
    for recipient, held_list in pending.items():
        tenant_config = services.config.tenant(held_list[0].tenant)
        listed = held_list[:MAX_LISTED]
        rows = [DigestRow(h, sign_link(settings, "release", h.message_id, recipient),
                          sign_link(settings, "allow", h.message_id, recipient)) for h in listed]
        msg = build_digest(settings, tenant_config, recipient, rows,
                           more=len(held_list) - len(listed), now=now)
        digest_id = f"spam-digest-{now:%Y%m%dT%H%M%S}"
        try:
            services.own_mail_for(tenant_config).deliver(digest_id, recipient, settings.postmaster,
                                                       msg.as_bytes(policy=SMTP))
        except DeliveryError as exc:
            run.failed[recipient] = str(exc)[:300]
            log.warning("spam digest not sent", extra={"tenant": tenant_config.name,
                                                       "action": "digest"})
            continue
        store.mark_digested([(h.message_id, recipient) for h in listed], now)
        run.sent[recipient] = len(listed)
    log.info("spam digests sent", extra={"action": "digest", "count": len(run.sent)})
    return run

