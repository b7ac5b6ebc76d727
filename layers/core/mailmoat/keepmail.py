"""Keep-mail (continuity view): each recipient's delivered copies, their sign-in, and the sweep.

At delivery the copy each recipient was sent (after isolation and rewrite, so a dangerous file
is never kept) is stored as `keep/<recipient>/<id>` with an index row and its outcome
(delivered, refused by the mailbox, pending). Recipients sign in with a password the admin
set (argon2) or a one-time code mailed to their alternate address, and read the last
`keepmail_days` days in the portal (web/mailmoat_web/keepmail.py).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailmoat.attempts import (
    KEEPMAIL_ACCOUNT,
    KEEPMAIL_CODE,
    KEEPMAIL_NETWORK,
    AttemptLimiter,
    source_network,
)
from mailmoat.context import Disposition, MessageContext
from mailmoat.ports import DeliveryError, KeepMailStore
from mailmoat.states import Outcome

if TYPE_CHECKING:
    from mailmoat.pipeline import Services
    from mailmoat.ports import BlobStore

log = logging.getLogger("mailmoat.keepmail")

CODE_DIGITS = 8
CODE_TTL = timedelta(minutes=10)
CODE_MAX_ATTEMPTS = 5  # wrong entries before the code is void
CODE_RESEND_AFTER = timedelta(seconds=60)
SESSION_TTL = timedelta(hours=8)
MIN_PASSWORD_CHARS = 12
SWEEP_EVERY_SECONDS = 3600.0

# Default argon2id parameters (RFC 9106 low-memory profile).
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the address has no password, so "unknown" costs as long as
    "wrong". Made on first sign-in, not at import (the deliver stage imports this module)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def normalise(address: str) -> str:
    return address.strip().lower()


def blob_key(recipient: str, message_id: str) -> str:
    return f"keep/{normalise(recipient)}/{message_id}"


def outcome_kind(outcome: str) -> str:
    """delivered | refused (the mailbox said no for good) | pending (deferred, held)."""
    kind = Outcome.of(outcome)
    if kind is Outcome.DELIVERED:
        return "delivered"
    if kind is Outcome.FAILED:
        return "refused"
    return "pending"


@dataclass(slots=True)
class KeptMessage:
    message_id: str
    recipient: str
    tenant: str
    received_at: datetime
    from_header: str | None
    subject: str | None
    outcome: str
    blob_key: str
    kept_until: datetime

    @property
    def kind(self) -> str:
        return outcome_kind(self.outcome)

    @property
    def final(self) -> bool:
        return self.kind != "pending"


@dataclass(frozen=True, slots=True)
class OneTimeCode:
    code_sha: str  # argon2 hash of the code
    expires_at: datetime
    attempts: int
    created_at: datetime


# --- retention at delivery --------------------------------------------------------------------

_last_sweep: dict[int, float] = {}


def retain(ctx: MessageContext, services: Services) -> None:
    """Keep each recipient's copy with its outcome. A copy whose outcome is final (delivered or
    refused) is written once; a pending one is replaced on the retry (it carries a fresh
    portal link then, the old one having been replaced by the isolate stage)."""
    tenant = services.tenant(ctx)
    if tenant.keepmail_days <= 0 or ctx.disposition not in (Disposition.DELIVER, Disposition.HELD):
        return
    store = services.keepmail
    if store is None:
        # The AWS runtime has no keep-mail store yet: the tenant asked for copies, so every
        # message says it got none rather than the option silently doing nothing.
        ctx.add("KEEPMAIL_UNAVAILABLE", "message", "keep-mail is not available on this runtime")
        return
    from mailmoat.archive import received_at

    when = received_at(ctx, services)
    kept_until = when + timedelta(days=tenant.keepmail_days)
    fallback = ctx.output if ctx.output is not None else ctx.raw
    kept = 0
    for rcpt in dict.fromkeys(normalise(r) for r in ctx.envelope.rcpt_to):
        outcome = ctx.deliveries.get(rcpt) or next(
            (o for r, o in ctx.deliveries.items() if normalise(r) == rcpt), None)
        if not outcome or Outcome.of(outcome) is Outcome.QUARANTINED:
            continue  # not handed over here; spam quarantine has its own store and digest
        existing = store.get(ctx.id, rcpt)
        if existing is not None and existing.final:
            continue  # a re-run: this recipient's copy and outcome are settled
        if existing is None and ctx.outputs and rcpt not in ctx.outputs:
            # Copies differ per recipient (portal links) and this run made none for this one
            # (delivered before an interrupted run): `output` is another recipient's copy.
            log.warning("no copy to keep for a recipient", extra={"message_id": ctx.id})
            continue
        key = blob_key(rcpt, ctx.id)
        if existing is None or rcpt in ctx.outputs:
            services.blobs.put(key, ctx.outputs.get(rcpt, fallback))
        store.put(KeptMessage(message_id=ctx.id, recipient=rcpt, tenant=tenant.name,
                              received_at=when, from_header=ctx.from_header, subject=ctx.subject,
                              outcome=outcome[:300], blob_key=key, kept_until=kept_until))
        kept += 1
    if kept:
        ctx.add_action("keepmail")
    _maybe_sweep(store, services)


def _maybe_sweep(store: KeepMailStore, services: Services) -> None:
    """Old copies go at most once an hour per store, from the worker that keeps new ones."""
    now = time.monotonic()
    last = _last_sweep.get(id(store))
    if last is not None and now - last < SWEEP_EVERY_SECONDS:
        return
    _last_sweep[id(store)] = now
    sweep(store, services.blobs, services.clock.now())


def sweep(store: KeepMailStore, blobs: BlobStore, now: datetime) -> int:
    """Delete copies past their tenant's keep-mail days (blob first, then the row), expired
    codes and sessions. Returns how many copies went."""
    removed = 0
    for kept in store.expired(now):
        try:
            blobs.delete(kept.blob_key)
        except Exception:  # a missing blob must not keep the row forever
            log.warning("kept copy could not be deleted", extra={"message_id": kept.message_id})
        store.delete(kept.message_id, kept.recipient)
        removed += 1
    store.purge(now)
    if removed:
        log.info("keep-mail sweep", extra={"action": "sweep", "count": removed})
    return removed


# --- credentials ------------------------------------------------------------------------------

class SignInRefused(Exception):
    """Wrong password or code, unknown address, or too many attempts: one answer for all."""

    def __init__(self, limited: bool = False) -> None:
        super().__init__("sign-in refused")
        self.limited = limited


def set_password(store: KeepMailStore, address: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a keep-mail password needs at least {MIN_PASSWORD_CHARS} characters")
    store.set_password(normalise(address), _HASHER.hash(password))


def check_password(store: KeepMailStore, limiter: AttemptLimiter, address: str, password: str,
                   client_ip: str | None) -> str:
    """The signed-in address, or SignInRefused. The attempt is reserved first (per address from
    anywhere, per source network: mailmoat.attempts), so parallel guesses cannot outrun it."""
    address = normalise(address)
    reservation = limiter.reserve([(KEEPMAIL_ACCOUNT, address),
                                   (KEEPMAIL_NETWORK, source_network(client_ip))])
    if reservation is None:
        raise SignInRefused(limited=True)
    stored = store.password_hash(address)
    try:
        _HASHER.verify(stored or _dummy_hash(), password)
        if stored is None:
            raise VerificationError("no password")
    except (VerificationError, InvalidHashError):
        log.info("keep-mail sign-in refused", extra={"action": "signin-refused"})
        raise SignInRefused() from None
    reservation.succeeded()
    if _HASHER.check_needs_rehash(stored):
        store.set_password(address, _HASHER.hash(password))
    return address


def send_code(store: KeepMailStore, services: Services, address: str, now: datetime) -> bool:
    """Mail a one-time code to the address's alternate. False (and nothing sent) when there is
    no alternate or a code went out moments ago; the page says the same either way."""
    address = normalise(address)
    alternate = store.alternate(address)
    recipient = services.directory.recipient(address)
    if not alternate or recipient is None:
        return False
    current = store.code(address)
    if current is not None and now - current.created_at < CODE_RESEND_AFTER:
        return False
    code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    store.set_code(address, OneTimeCode(_HASHER.hash(code), now + CODE_TTL, 0, now))
    tenant = services.config.tenant(recipient.tenant)
    from mailmoat.archive import postmaster

    sender = postmaster(services.settings)
    data = code_message(sender, alternate, address, code, now, tenant.language)
    # A code is the gateway's own mail to an outside address (on AWS it leaves as a notice
    # does, through SES From the postmaster: the tenant's mailer sends only under a claim).
    mailer = services.outside_mail_for(tenant)
    try:
        mailer.deliver(f"keepmail-code-{secrets.token_hex(8)}", alternate, sender, data)
    except DeliveryError:
        log.warning("keep-mail code not delivered", extra={"action": "code"})
        store.set_code(address, None)
        return False
    log.info("keep-mail code sent", extra={"action": "code"})
    return True


def check_code(store: KeepMailStore, limiter: AttemptLimiter, address: str, code: str,
               client_ip: str | None, now: datetime) -> str:
    address = normalise(address)
    current = store.code(address)
    if current is None or current.expires_at <= now or current.attempts >= CODE_MAX_ATTEMPTS:
        raise SignInRefused(limited=current is not None and current.attempts >= CODE_MAX_ATTEMPTS)
    reservation = limiter.reserve([(KEEPMAIL_CODE, address),
                                   (KEEPMAIL_NETWORK, source_network(client_ip))])
    if reservation is None:
        raise SignInRefused(limited=True)
    code = code.strip()
    valid = code.isdigit() and len(code) == CODE_DIGITS
    try:
        _HASHER.verify(current.code_sha, code if valid else "-")
    except (VerificationError, InvalidHashError):
        store.count_code_attempt(address)
        raise SignInRefused() from None
    reservation.succeeded()
    store.set_code(address, None)  # one time
    return address


def code_message(sender: str, to: str, address: str, code: str, now: datetime, language: str) -> bytes:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = format_datetime(now if now.tzinfo else now.replace(tzinfo=UTC))
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "mailmoat.localhost")
    msg["Auto-Submitted"] = "auto-generated"
    minutes = int(CODE_TTL.total_seconds() // 60)
    if language == "ja":
        msg["Subject"] = "メール閲覧（キープメール）の確認コード"
        msg.set_content(f"{address} のメール閲覧の確認コード: {code}\n"
                        f"{minutes} 分間有効です。心当たりがない場合は無視してください。\n"
                        f"\nYour keep-mail sign-in code for {address}: {code} "
                        f"(valid {minutes} minutes).\n")
    else:
        msg["Subject"] = "Your keep-mail sign-in code"
        msg.set_content(f"Your keep-mail sign-in code for {address}: {code}\n"
                        f"It is valid for {minutes} minutes. If you did not ask for it, ignore this.\n")
    return msg.as_bytes()


# --- sessions ---------------------------------------------------------------------------------

def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_session(store: KeepMailStore, address: str, now: datetime) -> str:
    token = secrets.token_urlsafe(32)
    store.add_session(_sha(token), normalise(address), now + SESSION_TTL)
    return token


def session_address(store: KeepMailStore, token: str | None, now: datetime) -> str | None:
    if not token or len(token) > 128:
        return None
    return store.session(_sha(token), now)


def close_session(store: KeepMailStore, token: str | None) -> None:
    if token and len(token) <= 128:
        store.end_session(_sha(token))


# --- admin CLI: `mailmoat keepmail …` -------------------------------------------------------------

def add_keepmail_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keepmail", help="keep-mail sign-in (passwords, alternate addresses) and sweep")
    keep = p.add_subparsers(dest="keepmail_command", required=True)
    sp = keep.add_parser("set-password", help="set a recipient's keep-mail password (argon2)")
    sp.add_argument("address")
    sp.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of stdin (scripts); default: prompt")
    sp.set_defaults(func=_cmd_set_password)
    sa = keep.add_parser("set-alternate",
                         help="where one-time sign-in codes are mailed (an address outside the mailbox)")
    sa.add_argument("address")
    sa.add_argument("alternate", nargs="?", default=None, help="omit to remove the alternate address")
    sa.set_defaults(func=_cmd_set_alternate)
    sw = keep.add_parser("sweep", help="delete kept copies older than each tenant's keepmail_days")
    sw.set_defaults(func=_cmd_sweep)


def _cli_store(args: argparse.Namespace) -> tuple[Services, KeepMailStore]:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.cli import _settings

    services = bootstrap(_settings(args)).services
    store = services.keepmail
    if store is None:
        raise SystemExit("mailmoat: no keep-mail store (on AWS: set MAILMOAT_KEEPMAIL_TABLE to the "
                         "stack's KeepMailTable, see docs/archive-keepmail.md)")
    return services, store


def _known(services: Services, address: str) -> bool:
    if services.directory.recipient(normalise(address)) is None:
        print(f"mailmoat: {address} is not a recipient in the directory", file=sys.stderr)
        return False
    return True


def _cmd_set_password(args: argparse.Namespace) -> int:
    services, store = _cli_store(args)
    if not _known(services, args.address):
        return 1
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass("keep-mail password: ")
        if getpass.getpass("again: ") != password:
            print("mailmoat: the passwords differ", file=sys.stderr)
            return 1
    try:
        set_password(store, args.address, password)
    except ValueError as exc:
        print(f"mailmoat: {exc}", file=sys.stderr)
        return 1
    print(f"keep-mail password set for {normalise(args.address)}")
    return 0


def _cmd_set_alternate(args: argparse.Namespace) -> int:
    services, store = _cli_store(args)
    if not _known(services, args.address):
        return 1
    alternate = normalise(args.alternate) if args.alternate else None
    if alternate is not None and ("@" not in alternate or any(c.isspace() for c in alternate)):
        print(f"mailmoat: not an address: {args.alternate!r}", file=sys.stderr)
        return 1
    store.set_alternate(normalise(args.address), alternate)
    print(f"keep-mail alternate for {normalise(args.address)}: {alternate or '(none)'}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    services, store = _cli_store(args)
    removed = sweep(store, services.blobs, services.clock.now())
    print(f"keep-mail sweep: {removed} copies deleted")
    return 0
