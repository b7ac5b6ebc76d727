"""PPAP pairing (issue 17): an encrypted attachment, then its password in a second mail
("パスワードは 1234 です"), or in the same one. The gateway tries the passwords it finds and,
when one opens the file, scans what is inside, so the recipient gets checked files in the
portal instead of a password form.

Who may open what. A follow-up opens a held file only when all of these hold (DESIGN's "none
crossed", and no stranger may feed guesses): the same tenant; the same authenticated sender
domain (the From domain, with SPF or DKIM aligned, on both mails); the same envelope
recipients; within the tenant's `ppap_window_minutes`; and linked, by In-Reply-To/References
or the same subject. At most MAX_CANDIDATES passwords are tried per file, each at the file's
own cost (AES-zip key derivation, Office's 100,000 SHA-512 rounds).

What is kept. Never the password: not in the store, the log or the page. The store keeps
which message's password opened the file (`OpenedFile.by_message`), and the opened members
(their bytes as blobs, their verdicts from a second scan with the antivirus required)."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailmoat.context import MessageContext, Verdict

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.isolation import IsolatedFile
    from mailmoat.pipeline import Services

log = logging.getLogger("mailmoat.ppap")

MAX_CANDIDATES = 10
# One follow-up opens at most this many held files, newest first: each costs up to
# MAX_CANDIDATES tries at the file's own price (an Office file ~0.16 s a try).
MAX_FILES_PER_FOLLOW_UP = 5
_MAX_TEXT = 200_000  # characters of body text read for candidates, per message
_MIN_LEN, _MAX_LEN = 3, 64

# What introduces a password, in the phrasings Japanese and English business mail uses.
_LABEL = (r"(?:解凍|開封|展開|添付(?:ファイル)?の?|ファイルの?|zipの?|ZIPの?)?"
          r"(?:パスワード|パスワ[-ー－]ド|ﾊﾟｽﾜｰﾄﾞ|暗証番号|暗号キー|解凍キー|PASSWORD|[Pp]assword"
          r"|[Pp]ass[Cc]ode|[Pp]asscode|PW|[Pp]w|P/W|PWD|[Pp]wd|パス)")
# "パスワードは 1234 です", "Password: abc", "パスワード：「abc」", "the password is abc."
_INLINE = re.compile(
    _LABEL + r"[ \t\u3000]*(?:\(.*?\)|（.*?）)?[ \t\u3000]*"
    r"(?:(?P<delim>は|:|：|=|＝|->|→|is|for [^:：\n]{1,40}? is|for [^:：\n]{1,40}?:)[ \t\u3000]*)?"
    r"(?:[「『【\[\"'“‘`]\s*(?P<quoted>[^」』】\]\"'”’`\n]{1,80}?)\s*[」』】\]\"'”’`]"
    r"|(?<=[はis:：=＝>→ \t\u3000])(?P<bare>[^\s「」『』【】\"'“”‘’`、。,]{1,80}))")
# A label on a line of its own ("パスワードは以下の通りです。"), the password on the next one.
_LINE_LABEL = re.compile(
    _LABEL + r"(?:(?!別途|別メール|後ほど|後程|separately|later)[^\n]){0,40}"
    r"(?:[:：]|です|でございます|となります|通り|下記|以下|follows|below|is)[。.:：]?[ \t\u3000]*$",
    re.MULTILINE)
_LABEL_ANYWHERE = re.compile(_LABEL)
_FENCE = re.compile(r"```[^\n]*\n(?P<body>[^`]{1,200}?)\n```")
_TRAILING = re.compile(r"(?:です|でございます|となります|になります|となっております|です。)$")
_EDGE = ".,;:!?。、．，！？」』】)]）\"'"
_WORDS = frozenset({"です", "は", "以下", "下記", "次", "the", "is", "for", "your", "this", "attached",
                    "file", "mail", "email", "below", "follows", "following", "separately", "別途",
                    "別メール", "お送りします", "送ります", "ご連絡します"})


def password_candidates(texts: Iterable[str]) -> list[str]:
    """Up to MAX_CANDIDATES distinct passwords the texts offer, most likely first. Full-width
    characters ("１２３４", "ａｂｃ") are also tried as their ASCII forms."""
    found: list[str] = []

    def add(value: str | None) -> None:
        if not value:
            return
        raw = _TRAILING.sub("", value.strip(" \t\u3000\r\n"))
        for form in (_clean(value), raw.strip(" \t\u3000"), unicodedata.normalize("NFKC", raw)):
            form = unicodedata.normalize("NFKC", form)
            # Passwords to archives are ASCII in practice (zip's own encoding of anything else
            # differs between writers); Japanese sentence fragments are never candidates.
            if not form or form.lower() in _WORDS or not _MIN_LEN <= len(form) <= _MAX_LEN \
                    or not form.isascii() or not form.isprintable():
                continue
            if form not in found:
                found.append(form)

    budget = _MAX_TEXT
    for text in texts:
        text = text[:budget]
        budget -= len(text)
        for match in _INLINE.finditer(text):
            bare = match.group("bare")
            if bare and not match.group("delim") and bare.isalpha():
                continue  # "Password will follow": a word after the label, not a password
            add(match.group("quoted") or bare)
        for match in _LINE_LABEL.finditer(text):
            rest = text[match.end():].lstrip("\r\n")
            line = rest.split("\n", 1)[0].strip(" \t\u3000\r")
            if line and " " not in line and not _LABEL_ANYWHERE.search(line):
                add(line.strip("「」『』【】[]\"'`"))
        for match in _FENCE.finditer(text):
            body = match.group("body").strip()
            if "\n" not in body:
                add(body)
        if budget <= 0:
            break
    return found[:MAX_CANDIDATES]


def _clean(value: str) -> str:
    value = value.strip(" \t\u3000\r\n")
    value = _TRAILING.sub("", value)
    return value.strip(_EDGE + " \t\u3000")


_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|tr)\s*(?:\[\d+\])?\s*[:：]|返信\s*[:：]|転送\s*[:：]"
    r"|【[^】]{0,20}】|\[[^\]]{0,20}\]|(?:password|パスワード)[^:：]{0,20}[:：])\s*", re.IGNORECASE)


def subject_key(subject: str | None) -> str:
    """The subject without reply/forward prefixes and bracketed tags, NFKC, spaces folded:
    "Re: 【パスワード】見積書送付の件" and "見積書送付の件" give the same key."""
    text = unicodedata.normalize("NFKC", subject or "")
    while True:
        stripped = _SUBJECT_PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return " ".join(text.split()).lower()


def authenticated_domain(ctx: MessageContext) -> str | None:
    """The From domain when SPF or DKIM passed for an aligned domain (relaxed); else None: a
    sender we cannot tie to its domain pairs with nothing."""
    from mailmoat.auth import dmarc

    address = _address(ctx.from_header)
    if "@" not in address:
        return None
    domain = address.rpartition("@")[2].lower().rstrip(".")
    mail_from = (ctx.envelope.mail_from or "").rpartition("@")[2].lower()
    dkim_domain = ctx.auth.details.get("dkim_domain")
    spf_ok = ctx.auth.spf == "pass" and bool(mail_from) and dmarc.aligned(mail_from, domain, "r")
    dkim_ok = ctx.auth.dkim == "pass" and isinstance(dkim_domain, str) and \
        dmarc.aligned(dkim_domain, domain, "r")
    return domain if spf_ok or dkim_ok else None


def _address(header: str | None) -> str:
    from email.utils import parseaddr

    return parseaddr(header or "")[1]


def _message_ids(value: str | None) -> set[str]:
    return {m.lower() for m in re.findall(r"<[^<>\s]{1,250}>", value or "")}


@dataclass(frozen=True, slots=True)
class PairableFile:
    """A held encrypted file a follow-up may open (never the file itself, never a password)."""

    tenant: str
    sender_domain: str
    recipients: tuple[str, ...]  # sorted, lower case
    message_id: str  # ours
    path: str
    filename: str
    header_message_id: str | None  # the first mail's Message-ID, lower case, with <>
    subject_key: str
    created_at: datetime
    expires_at: datetime  # created_at + the tenant's window

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "sender_domain": self.sender_domain,
                "recipients": list(self.recipients), "message_id": self.message_id,
                "path": self.path, "filename": self.filename,
                "header_message_id": self.header_message_id, "subject_key": self.subject_key,
                "created_at": self.created_at.isoformat(), "expires_at": self.expires_at.isoformat()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairableFile:
        return cls(tenant=d["tenant"], sender_domain=d["sender_domain"],
                   recipients=tuple(d["recipients"]), message_id=d["message_id"], path=d["path"],
                   filename=d.get("filename", ""), header_message_id=d.get("header_message_id"),
                   subject_key=d.get("subject_key", ""),
                   created_at=datetime.fromisoformat(d["created_at"]),
                   expires_at=datetime.fromisoformat(d["expires_at"]))


@dataclass(slots=True)
class OpenedMember:
    index: int
    name: str
    size: int
    verdict: Verdict
    symbols: list[str]
    blob_key: str | None  # None: not kept (danger, or not checked by an antivirus)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "size": self.size,
                "verdict": str(self.verdict), "symbols": list(self.symbols),
                "blob_key": self.blob_key}


@dataclass(slots=True)
class OpenedFile:
    """A held file a password from mail opened. `by_message` is the mail the password came
    from (the file's own message id when it was in the same mail)."""

    message_id: str
    path: str
    by_message: str
    at: datetime
    archive: bool
    members: list[OpenedMember] = field(default_factory=list)

    @property
    def same_mail(self) -> bool:
        return self.by_message == self.message_id

    def to_dict(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "path": self.path, "by_message": self.by_message,
                "at": self.at.isoformat(), "archive": self.archive,
                "members": [m.to_dict() for m in self.members]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpenedFile:
        return cls(message_id=d["message_id"], path=d["path"], by_message=d["by_message"],
                   at=datetime.fromisoformat(d["at"]), archive=bool(d.get("archive", True)),
                   members=[OpenedMember(index=int(m["index"]), name=m["name"], size=int(m["size"]),
                                         verdict=Verdict(m["verdict"]), symbols=list(m["symbols"]),
                                         blob_key=m.get("blob_key"))
                            for m in d.get("members", [])])


def opened_blob_key(message_id: str, path: str, index: int) -> str:
    return f"isolated/{message_id}/{path}.opened/{index}"


def _body_texts(ctx: MessageContext) -> list[str]:
    if ctx.parsed is None:
        return []
    texts: list[str] = []
    for part in ctx.parsed.parts:
        if part.kind == "body" and part.content_type in ("text/plain", "text/html") \
                and part.inside_message is None:
            try:
                text = part.text()
            except Exception as exc:  # an undecodable body offers no candidates
                log.info("ppap: body part not readable", extra={"detail": type(exc).__name__})
                continue
            if part.content_type == "text/html":
                text = _html_text(text)
            texts.append(text)
    return texts


def _html_text(html_text: str) -> str:
    from mailmoat.rewrite.htmldoc import parse_html

    try:
        doc = parse_html(html_text)
        return str(doc.root.text_content())
    except Exception:
        return re.sub(r"<[^>]{0,2000}>", " ", html_text)


def pairable(record: IsolatedFile) -> bool:
    """A held file the portal would ask a password for: an encrypted zip, 7z, Office or PDF."""
    from mailmoat.services.downloads import offer_for

    return record.blob_key is not None and offer_for(record).allows("unlock")


def remember_and_try(ctx: MessageContext, services: Services, tenant: TenantConfig,
                     files: list[IsolatedFile]) -> list[OpenedFile]:
    """After the isolate stage stored `files`: each encrypted one is remembered for a
    follow-up, and the passwords this same mail carries are tried on it now."""
    store = services.isolation
    held = [f for f in files if pairable(f)]
    if store is None or not held or not tenant.ppap_pairing:
        return []
    now = services.clock.now()
    domain = authenticated_domain(ctx)
    if domain is not None:
        recipients = tuple(sorted({r.lower() for r in ctx.envelope.rcpt_to}))
        header_id = next(iter(_message_ids(ctx.message_id)), None)
        for record in held:
            store.add_pairable(PairableFile(
                tenant=tenant.name, sender_domain=domain, recipients=recipients,
                message_id=ctx.id, path=record.path, filename=record.filename,
                header_message_id=header_id, subject_key=subject_key(ctx.subject),
                created_at=now, expires_at=now + timedelta(minutes=tenant.ppap_window_minutes)))
    candidates = password_candidates(_body_texts(ctx))
    if not candidates:
        return []
    opened = [done for record in held
              if (done := try_open(services, tenant, record, candidates, ctx.id)) is not None]
    for done in opened:
        ctx.add("PPAP_OPENED", done.path, "the password in this mail opened it; contents scanned")
    return opened


def pair_follow_up(ctx: MessageContext, services: Services,
                   tenant: TenantConfig) -> list[tuple[PairableFile, OpenedFile]]:
    """This mail as the follow-up of earlier held files: (the file, what opened) for each one
    its passwords opened."""
    store = services.isolation
    if store is None or not tenant.ppap_pairing:
        return []
    domain = authenticated_domain(ctx)
    if domain is None:
        return []
    now = services.clock.now()
    recipients = tuple(sorted({r.lower() for r in ctx.envelope.rcpt_to}))
    links = _message_ids(header_of(ctx, "in-reply-to")) | _message_ids(header_of(ctx, "references"))
    key = subject_key(ctx.subject)
    matching = [p for p in store.pairable(tenant.name, domain, now)
                if p.message_id != ctx.id and p.recipients == recipients
                and p.created_at <= now < p.expires_at
                and ((p.header_message_id is not None and p.header_message_id in links)
                     or (len(p.subject_key) >= 3 and p.subject_key in key))]
    done: list[tuple[PairableFile, OpenedFile]] = []
    waiting: list[PairableFile] = []
    for p in matching:
        earlier = store.opened(p.message_id, p.path)
        if earlier is None:
            waiting.append(p)
        elif earlier.by_message == ctx.id:
            done.append((p, earlier))  # a re-run of this stage: opened by this mail already
    waiting = sorted(waiting, key=lambda p: p.created_at, reverse=True)[:MAX_FILES_PER_FOLLOW_UP]
    candidates = password_candidates(_body_texts(ctx)) if waiting else []
    for pending in waiting if candidates else []:
        record = next((f for f in store.files(pending.message_id) if f.path == pending.path), None)
        if record is None or not pairable(record):
            continue
        opened = try_open(services, tenant, record, candidates, ctx.id)
        if opened is not None:
            done.append((pending, opened))
            ctx.add("PPAP_PASSWORD_USED", "message",
                    f"opened {pending.filename or pending.path} of an earlier mail")
    return done


def header_of(ctx: MessageContext, name: str) -> str | None:
    from mailmoat.message import header_text

    return header_text(ctx.parsed.message, name) if ctx.parsed is not None else None


def try_open(services: Services, tenant: TenantConfig, record: IsolatedFile,
             candidates: list[str], by_message: str) -> OpenedFile | None:
    """Each candidate until one opens the file; its members scanned again (an antivirus is
    required: none has seen them) and kept as blobs unless danger or unchecked."""
    from mailmoat.services.rescan import AV_PENDING, AV_UNCHECKED, rescanner
    from mailmoat.services.unlock import Unsupported, WrongPassword, decrypt

    assert services.isolation is not None and record.blob_key is not None
    data = services.blobs.get(record.blob_key)
    decrypted = None
    tried = 0
    for candidate in candidates[:MAX_CANDIDATES]:
        tried += 1
        try:
            decrypted = decrypt(data, record.detected_type, candidate, services.settings.limits)
            break
        except WrongPassword:
            continue
        except Unsupported as exc:
            log.info("ppap: file cannot be opened here", extra={
                "message_id": record.message_id, "path": record.path, "detail": str(exc)[:200]})
            return None
        except Exception as exc:  # hostile content: no crash, no pass
            log.warning("ppap: decryption failed", extra={
                "message_id": record.message_id, "path": record.path,
                "detail": type(exc).__name__})
            return None
    if decrypted is None:
        log.info("ppap: no candidate opened the file", extra={
            "message_id": record.message_id, "path": record.path, "count": len(candidates),
            "by_message": by_message})
        return None
    rescan = rescanner(services, tenant, antivirus_required=True)
    opened = OpenedFile(message_id=record.message_id, path=record.path, by_message=by_message,
                        at=services.clock.now(), archive=decrypted.archive)
    for index, (name, content) in enumerate(decrypted.members):
        shown = name or record.filename
        result = rescan(content, shown.rsplit("/", 1)[-1])
        verdict = result.verdict
        if AV_UNCHECKED in result.own_symbols or AV_PENDING in result.own_symbols:
            verdict = Verdict.worst([verdict, Verdict.UNSUPPORTED])
        key = None
        if verdict not in (Verdict.DANGER, Verdict.UNSUPPORTED):
            key = opened_blob_key(record.message_id, record.path, index)
            services.blobs.put(key, content)
        opened.members.append(OpenedMember(index=index, name=shown, size=len(content),
                                           verdict=verdict, symbols=list(result.symbols),
                                           blob_key=key))
    services.isolation.set_opened(opened, record.expires_at)
    log.info("ppap: a password from mail opened the file", extra={
        "message_id": record.message_id, "path": record.path, "by_message": by_message,
        "tries": tried, "files": len(opened.members), "action": "ppap-open"})
    return opened
