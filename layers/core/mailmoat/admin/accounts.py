"""Admin accounts: argon2id password hashes, sign-in behind the attempt limiter (mailmoat.attempts)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailmoat.attempts import ADMIN_ACCOUNT, ADMIN_NETWORK, AttemptLimiter, source_network
from mailmoat.ports import AccountStore, AttemptStore

ALL_TENANTS = "*"  # an operator account: every tenant, shown as such in the console
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # hashing is deliberately expensive; refuse megabyte "passwords"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AccountError(ValueError):
    """An account cannot be created as asked (exists, bad address, weak password)."""


@dataclass(frozen=True, slots=True)
class AdminAccount:
    email: str
    tenant: str  # a tenant name, or ALL_TENANTS for an operator
    password_hash: str
    created_at: datetime
    disabled: bool = False
    # Sessions signed in at or before this (epoch ms) are void: "sign out" ends them all.
    sessions_after_ms: int = 0

    @property
    def operator(self) -> bool:
        return self.tenant == ALL_TENANTS

    def may_manage(self, tenant: str) -> bool:
        return not self.disabled and (self.operator or self.tenant == tenant)


# One hasher for the process: argon2id with the library's RFC 9106 "low memory" defaults.
HASHER = PasswordHasher()
# Each verification takes 64 MiB for a moment: a burst of sign-in attempts (the web server runs
# up to 40 request threads) must queue here rather than take the gateway's memory.
CONCURRENT_VERIFICATIONS = threading.BoundedSemaphore(4)


def hash_password(password: str) -> str:
    check_password_strength(password)
    return HASHER.hash(password)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")


def normalise_email(email: str) -> str:
    address = email.strip().lower()
    if not _EMAIL.match(address):
        raise AccountError(f"not an e-mail address: {email!r}")
    return address


def create_account(store: AccountStore, *, email: str, tenant: str, password: str,
                   now: datetime, known_tenants: list[str]) -> AdminAccount:
    """A new admin of one tenant (or of all, with tenant=ALL_TENANTS)."""
    address = normalise_email(email)
    if tenant != ALL_TENANTS and tenant not in known_tenants:
        raise AccountError(f"no tenant {tenant!r} (known: {', '.join(known_tenants) or 'none'})")
    account = AdminAccount(email=address, tenant=tenant, password_hash=hash_password(password),
                           created_at=now)
    if not store.create_account(account):
        raise AccountError(f"an admin account {address} already exists")
    return account


SignInOutcome = Literal["ok", "invalid", "limited"]


@dataclass(frozen=True, slots=True)
class SignIn:
    outcome: SignInOutcome
    account: AdminAccount | None = None


class Authenticator:
    """Checks a password once the limiter granted the attempt: per account from anywhere and per
    source network, reserved before the hash runs, so parallel requests cannot outrun it."""

    def __init__(self, store: AccountStore, attempts: AttemptStore | None,
                 now: Callable[[], datetime]) -> None:
        self.store = store
        self.limiter = AttemptLimiter(attempts, now)
        # Verified against when the account does not exist, so a missing account costs the
        # same time as a wrong password and does not reveal which addresses are admins.
        self._decoy = HASHER.hash("decoy password, never valid")

    def sign_in(self, email: str, password: str, client_ip: str | None) -> SignIn:
        address = email.strip().lower()[:320]
        reservation = self.limiter.reserve([(ADMIN_ACCOUNT, address),
                                            (ADMIN_NETWORK, source_network(client_ip))])
        if reservation is None:
            return SignIn("limited")
        account = self.store.account(address) if len(email) <= 320 else None
        if not self._verify(account.password_hash if account else self._decoy, password) \
                or account is None or account.disabled:
            return SignIn("invalid")  # the reservation stays counted as the failure
        reservation.succeeded()
        if HASHER.check_needs_rehash(account.password_hash):
            self.store.set_password_hash(account.email, HASHER.hash(password))
        return SignIn("ok", account)

    @staticmethod
    def _verify(password_hash: str, password: str) -> bool:
        if not password or len(password) > MAX_PASSWORD_LENGTH:
            return False
        with CONCURRENT_VERIFICATIONS:
            try:
                return HASHER.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False
