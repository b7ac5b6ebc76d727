"""Sign-in limits that cannot be raced: every password or code check first reserves an attempt.

An attack run sent 40 admin sign-ins at once and all 40 passwords were checked against a limit of
5: the failure count was read before the slow argon2 hash and written after it. Here the count is
taken first, in one atomic step of the store (SQLite: one BEGIN IMMEDIATE transaction; DynamoDB: a
conditional write of the version read), and the check runs only on a granted reservation. A
reservation counts as a failure until the check succeeds.

Each check reserves on two counters: the account (or the encrypted file) wherever the attempt
comes from, and the source network (/24 for IPv4, /64 for IPv6) whatever account it tries. Past a
counter's free attempts the next one waits, and the wait doubles with every further attempt up
to a cap: an attacker guessing one account from many networks gets a few guesses an hour, and the
owner waits at most the cap instead of being locked out for the whole window.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Literal

from mailmoat.ports import AttemptState, AttemptStore

if TYPE_CHECKING:
    from mailmoat.pipeline import Services

log = logging.getLogger("mailmoat.attempts")

OnSuccess = Literal["clear", "refund"]


@dataclass(frozen=True, slots=True)
class AttemptRule:
    """One counter's limit. `free` attempts in a row may come at once; after them each attempt
    waits `first_delay`, doubled per further attempt, at most `max_delay`. A counter whose last
    attempt is older than `window` starts over. On a successful check the account's counter is
    cleared; the network's gets the success's reservation back (an office behind one address)."""

    name: str
    free: int
    window: timedelta
    first_delay: timedelta
    max_delay: timedelta
    on_success: OnSuccess = "clear"

    def delay_after(self, count: int) -> timedelta:
        """The wait before the attempt after `count` reserved ones (zero while they are free)."""
        if count < self.free:
            return timedelta(0)
        doublings = min(count - self.free, 30)
        return min(timedelta(seconds=self.first_delay.total_seconds() * 2.0 ** doublings),
                   self.max_delay)


def _account(name: str, free: int, first: timedelta, cap: timedelta) -> AttemptRule:
    return AttemptRule(name, free, timedelta(minutes=15), first, cap, "clear")


def _network(name: str, free: int) -> AttemptRule:
    return AttemptRule(name, free, timedelta(minutes=15), timedelta(seconds=60), timedelta(hours=1),
                       "refund")


# The limits (README, security section). Accounts: 5 free, then 15 s doubling to 5 min.
ADMIN_ACCOUNT = _account("admin-account", 5, timedelta(seconds=15), timedelta(minutes=5))
ADMIN_NETWORK = _network("admin-network", 20)
KEEPMAIL_ACCOUNT = _account("keepmail-account", 5, timedelta(seconds=15), timedelta(minutes=5))
KEEPMAIL_CODE = _account("keepmail-code", 5, timedelta(seconds=30), timedelta(minutes=10))
KEEPMAIL_NETWORK = _network("keepmail-network", 20)
# Per encrypted file (DESIGN §7: five tries, then wait); its recipients share the file's counter.
UNLOCK_FILE = _account("unlock-file", 5, timedelta(seconds=30), timedelta(minutes=15))
UNLOCK_NETWORK = _network("unlock-network", 30)


def source_network(client_ip: str | None) -> str:
    """The counter key of where a request comes from: its /24 or /64, or "-" when unknown."""
    try:
        address = ipaddress.ip_address((client_ip or "").strip())
    except ValueError:
        return "-"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _fresh(state: AttemptState | None, rule: AttemptRule, now: datetime) -> AttemptState:
    if state is None or state.last_at is None or now - state.last_at > rule.window:
        return AttemptState(count=0, last_at=None, next_at=None)
    return state


def reserve_step(state: AttemptState | None, rule: AttemptRule,
                 now: datetime) -> tuple[bool, AttemptState | None]:
    """Pure: (granted, the new state) for one reservation against `state`."""
    current = _fresh(state, rule, now)
    if current.next_at is not None and now < current.next_at:
        return False, state
    count = current.count + 1
    delay = rule.delay_after(count)
    return True, AttemptState(count=count, last_at=now, next_at=now + delay if delay else None)


def success_step(state: AttemptState | None, rule: AttemptRule,
                 now: datetime) -> tuple[None, AttemptState | None]:
    """Pure: a successful check clears the account's counter and refunds the network's."""
    if state is None or rule.on_success == "clear":
        return None, None
    count = max(state.count - 1, 0)
    delay = rule.delay_after(count)
    return None, replace(state, count=count,
                         next_at=state.next_at if delay and state.next_at else None)


def refund_step(state: AttemptState | None, rule: AttemptRule,
                now: datetime) -> tuple[None, AttemptState | None]:
    """Pure: a reservation given back (a later counter refused, or the check could not run)."""
    if state is None:
        return None, None
    count = max(state.count - 1, 0)
    return None, replace(state, count=count, next_at=None if count < rule.free else state.next_at)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Granted attempts on every counter of one check; `succeeded()` after a correct credential."""

    limiter: AttemptLimiter
    held: tuple[tuple[str, AttemptRule], ...]

    def succeeded(self) -> None:
        self.limiter.settle(self.held, success_step)

    def refund(self) -> None:
        """The check did not run (the file could not be read): the attempt is not counted."""
        self.limiter.give_back(self.held)


class AttemptLimiter:
    """Reserves attempts on (rule, key) counters before a credential is checked. Without a
    store (a runtime built without one) or when the store cannot answer, nothing is granted."""

    def __init__(self, store: AttemptStore | None, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now

    def reserve(self, counters: Sequence[tuple[AttemptRule, str]]) -> Reservation | None:
        """Every counter granted, or None (and no counter charged): the caller answers "wait"."""
        if self.store is None:
            log.error("no sign-in attempt store in this runtime: sign-in refused")
            return None
        store, now = self.store, self.now()
        held: list[tuple[str, AttemptRule]] = []
        for rule, subject in counters:
            key = f"{rule.name}|{subject.lower()[:400]}"
            try:
                granted = store.transition(key, partial(reserve_step, rule=rule, now=now),
                                           now + rule.window + rule.max_delay)
            except Exception:  # fails closed: a counter that cannot be taken grants nothing
                log.exception("sign-in attempt counter unavailable: sign-in refused")
                granted = False
            if not granted:
                self.give_back(held)
                return None
            held.append((key, rule))
        return Reservation(self, tuple(held))

    def give_back(self, held: Sequence[tuple[str, AttemptRule]]) -> None:
        self.settle(held, refund_step)

    def settle(self, held: Sequence[tuple[str, AttemptRule]], step: Callable[
            [AttemptState | None, AttemptRule, datetime], tuple[None, AttemptState | None]]) -> None:
        """Apply a settling step (success, refund) to each held counter."""
        if self.store is None:
            return
        now = self.now()
        for key, rule in held:
            def change(state: AttemptState | None,
                       rule: AttemptRule = rule) -> tuple[None, AttemptState | None]:
                return step(state, rule, now)
            try:
                self.store.transition(key, change, now + rule.window)
            except Exception:  # the counter stays charged: stricter, never looser
                log.exception("sign-in attempt counter not settled")


def attempt_limiter(services: Services) -> AttemptLimiter:
    """The limiter over the runtime's attempt store (built by its composition root)."""
    return AttemptLimiter(services.attempts, services.clock.now)
