"""The console's core pieces against the real stores: trace search (SQLite), accounts and the
sign-in limit, the session secret file, the session cookie codec, policy overrides, Cognito claims."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailmoat.adapters.sqlite import SqliteDatabase, SqliteMessageLog
from mailmoat.adapters.sqlite_admin import SqliteAdminStore
from mailmoat.adapters.sqlite_attempts import SqliteAttemptStore
from mailmoat.admin.accounts import ALL_TENANTS, AccountError, Authenticator, create_account
from mailmoat.admin.policy import PolicyError, apply_overrides, with_policy
from mailmoat.admin.secret import load_or_create_secret
from mailmoat.attempts import ADMIN_ACCOUNT, ADMIN_NETWORK
from mailmoat.config import GatewayConfig, TenantConfig
from mailmoat.ports import MessageRecord, TraceQuery
from mailmoat_web.admin.console import admin_from_claims
from mailmoat_web.admin.session import ABSOLUTE_SECONDS, IDLE_SECONDS, SessionCodec

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


# --- message trace search ----------------------------------------------------------------------------

@pytest.fixture
def logbook(tmp_path: Path) -> SqliteMessageLog:
    return SqliteMessageLog(SqliteDatabase(tmp_path / "db.sqlite3"))


def put(logbook: SqliteMessageLog, id_: str, minutes: int, *, tenant: str = "a.test", subject: str = "",
        mail_from: str = "s@sender.example", rcpt: str = "alice@a.test", state: str = "delivered",
        disposition: str = "deliver", verdicts: tuple[str, ...] = (), symbols: tuple[str, ...] = ()) -> None:
    logbook.accept(MessageRecord(id=id_, received_at=T0 + timedelta(minutes=minutes), state="accepted",
                                 mail_from=mail_from, rcpt_to=[rcpt], tenant=tenant))
    report: dict[str, Any] = {
        "from": f"Someone <{mail_from}>",
        "attachments": [{"path": str(i + 2), "verdict": v, "symbols": []} for i, v in enumerate(verdicts)],
        "findings": [{"symbol": s, "target": "message", "detail": ""} for s in symbols]}
    logbook.update(id_, state=state, disposition=disposition, subject=subject, report=report)


def ids(records: list[MessageRecord]) -> list[str]:
    return [r.id for r in records]


def test_search_is_per_tenant_and_newest_first(logbook: SqliteMessageLog) -> None:
    put(logbook, "m1", 1)
    put(logbook, "m2", 2)
    put(logbook, "b1", 3, tenant="b.test", rcpt="x@b.test")
    assert ids(logbook.search(TraceQuery(tenant="a.test"))) == ["m2", "m1"]
    assert ids(logbook.search(TraceQuery(tenant="b.test"))) == ["b1"]
    assert ids(logbook.search(TraceQuery(tenant="nobody"))) == []
    assert ids(logbook.search(TraceQuery())) == ["b1", "m2", "m1"]


def test_search_text_criteria_escape_like_wildcards(logbook: SqliteMessageLog) -> None:
    put(logbook, "pct", 1, subject="100% off_sale")
    put(logbook, "plain", 2, subject="1000 offxsale", mail_from="boss@partner.example", rcpt="bob@a.test")
    put(logbook, "slash", 3, subject=r"path C:\temp")
    assert ids(logbook.search(TraceQuery(subject="0% o"))) == ["pct"]
    assert ids(logbook.search(TraceQuery(subject="off_sale"))) == ["pct"]
    assert ids(logbook.search(TraceQuery(subject="%"))) == ["pct"]
    assert ids(logbook.search(TraceQuery(subject="_"))) == ["pct"]
    assert ids(logbook.search(TraceQuery(subject="\\"))) == ["slash"]
    assert ids(logbook.search(TraceQuery(subject="OFF"))) == ["plain", "pct"]  # case-insensitive
    assert ids(logbook.search(TraceQuery(sender="PARTNER.example"))) == ["plain"]
    assert ids(logbook.search(TraceQuery(sender="Someone"))) == ["slash", "plain", "pct"]  # From header
    assert ids(logbook.search(TraceQuery(recipient="BOB@"))) == ["plain"]
    assert ids(logbook.search(TraceQuery(subject="' OR 1=1 --"))) == []


def test_search_by_time_state_disposition_verdict_and_symbol(logbook: SqliteMessageLog) -> None:
    put(logbook, "early", 0, verdicts=("safe",))
    put(logbook, "held", 60, state="held", disposition="held", symbols=("STAGE_FAILED",))
    put(logbook, "zip", 120, verdicts=("safe", "encrypted"), symbols=("SPF_FAIL",))
    put(logbook, "spam", 180, state="quarantined", disposition="quarantine")
    between = TraceQuery(since=T0 + timedelta(minutes=60), until=T0 + timedelta(minutes=180))
    assert ids(logbook.search(between)) == ["zip", "held"]  # since inclusive, until exclusive
    naive = TraceQuery(since=(T0 + timedelta(minutes=60)).replace(tzinfo=None))
    assert ids(logbook.search(naive)) == ["spam", "zip", "held"]
    assert ids(logbook.search(TraceQuery(state="held"))) == ["held"]
    assert ids(logbook.search(TraceQuery(disposition="quarantine"))) == ["spam"]
    assert ids(logbook.search(TraceQuery(verdict="encrypted"))) == ["zip"]
    assert ids(logbook.search(TraceQuery(verdict="safe"))) == ["zip", "early"]
    assert ids(logbook.search(TraceQuery(symbol="SPF_FAIL"))) == ["zip"]
    assert ids(logbook.search(TraceQuery(symbol="STAGE_FAILED", state="held"))) == ["held"]


def test_search_pages(logbook: SqliteMessageLog) -> None:
    for i in range(7):
        put(logbook, f"m{i}", i)
    assert ids(logbook.search(TraceQuery(limit=3))) == ["m6", "m5", "m4"]
    assert ids(logbook.search(TraceQuery(limit=3, offset=3))) == ["m3", "m2", "m1"]
    assert ids(logbook.search(TraceQuery(limit=3, offset=6))) == ["m0"]
    assert ids(logbook.search(TraceQuery(limit=-1))) == []


# --- accounts and signing in --------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def store(tmp_path: Path) -> SqliteAdminStore:
    return SqliteAdminStore(SqliteDatabase(tmp_path / "db.sqlite3"))


def test_accounts_are_stored_with_an_argon2id_hash_only(store: SqliteAdminStore) -> None:
    account = create_account(store, email=" Admin@A.Test ", tenant="a.test",
                             password="long enough password", now=T0, known_tenants=["a.test"])
    assert account.email == "admin@a.test"
    stored = store.account("admin@a.test")
    assert stored is not None and stored.password_hash.startswith("$argon2id$")
    assert "long enough password" not in stored.password_hash
    operator = create_account(store, email="ops@p.example", tenant=ALL_TENANTS,
                              password="long enough password", now=T0, known_tenants=["a.test"])
    assert operator.operator and operator.may_manage("a.test") and operator.may_manage("b.test")
    assert account.may_manage("a.test") and not account.may_manage("b.test")


@pytest.mark.parametrize(("email", "tenant", "password", "problem"), [
    ("admin@a.test", "a.test", "short", "at least"),
    ("admin@a.test", "a.test", "x" * 2000, "at most"),
    ("not an address", "a.test", "long enough password", "not an e-mail"),
    ("admin@a.test", "b.test", "long enough password", "no tenant"),
])
def test_account_creation_refuses(store: SqliteAdminStore, email: str, tenant: str, password: str,
                                  problem: str) -> None:
    with pytest.raises(AccountError, match=problem):
        create_account(store, email=email, tenant=tenant, password=password, now=T0, known_tenants=["a.test"])
    assert store.accounts() == []


def test_an_address_is_one_account(store: SqliteAdminStore) -> None:
    create_account(store, email="admin@a.test", tenant="a.test", password="long enough password",
                   now=T0, known_tenants=["a.test"])
    with pytest.raises(AccountError, match="already exists"):
        create_account(store, email="ADMIN@a.test", tenant="a.test", password="another long one",
                       now=T0, known_tenants=["a.test"])


def test_failures_back_off_the_account_from_every_address_and_a_success_clears(
        store: SqliteAdminStore) -> None:
    create_account(store, email="admin@a.test", tenant="a.test", password="long enough password",
                   now=T0, known_tenants=["a.test"])
    clock = Clock()
    auth = Authenticator(store, SqliteAttemptStore(store.db), clock)
    for _ in range(ADMIN_ACCOUNT.free):
        assert auth.sign_in("admin@a.test", "wrong", "192.0.2.1").outcome == "invalid"
    # The account waits now, from this address and from any other (issue 19, item 3).
    assert auth.sign_in("admin@a.test", "long enough password", "192.0.2.1").outcome == "limited"
    assert auth.sign_in("admin@a.test", "long enough password", "198.51.100.7").outcome == "limited"
    clock.at += ADMIN_ACCOUNT.first_delay
    assert auth.sign_in("admin@a.test", "wrong", "198.51.100.7").outcome == "invalid"
    # Each further failure doubles the wait: a back-off, not a lock-out for the window.
    clock.at += ADMIN_ACCOUNT.first_delay
    assert auth.sign_in("admin@a.test", "long enough password", "192.0.2.1").outcome == "limited"
    clock.at += ADMIN_ACCOUNT.first_delay
    assert auth.sign_in("admin@a.test", "long enough password", "192.0.2.1").outcome == "ok"
    # The success cleared the account's counter: its free attempts are back.
    for _ in range(ADMIN_ACCOUNT.free - 1):
        assert auth.sign_in("admin@a.test", "wrong", "192.0.2.1").outcome == "invalid"
    assert auth.sign_in("admin@a.test", "long enough password", "192.0.2.1").outcome == "ok"


def test_one_network_trying_many_accounts_is_slowed_down(store: SqliteAdminStore) -> None:
    auth = Authenticator(store, SqliteAttemptStore(store.db), Clock())
    outcomes = [auth.sign_in(f"user{n}@a.test", "wrong", f"192.0.2.{n % 250}").outcome
                for n in range(ADMIN_NETWORK.free + 3)]
    assert outcomes[:ADMIN_NETWORK.free] == ["invalid"] * ADMIN_NETWORK.free
    assert set(outcomes[ADMIN_NETWORK.free:]) == {"limited"}  # all from 192.0.2.0/24
    assert auth.sign_in("user1@a.test", "wrong", "203.0.113.9").outcome == "invalid"


def test_disabled_unknown_and_oversized_sign_ins_fail_alike(store: SqliteAdminStore) -> None:
    create_account(store, email="admin@a.test", tenant="a.test", password="long enough password",
                   now=T0, known_tenants=["a.test"])
    auth = Authenticator(store, SqliteAttemptStore(store.db), Clock())
    store.set_disabled("admin@a.test", True)
    assert auth.sign_in("admin@a.test", "long enough password", "192.0.2.1").outcome == "invalid"
    assert auth.sign_in("nobody@a.test", "long enough password", "192.0.2.1").outcome == "invalid"
    assert auth.sign_in("x" * 10_000, "y" * 100_000, "192.0.2.1").outcome == "invalid"
    assert auth.sign_in("admin@a.test", "", None).outcome == "invalid"


# --- the session secret and cookie ---------------------------------------------------------------------

def test_the_session_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "var" / "admin" / "session.key"
    first = load_or_create_secret(path)
    assert len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    os.chmod(path, 0o644)
    assert load_or_create_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short\n")
    with pytest.raises(ValueError, match="too short"):
        load_or_create_secret(path)


class Seconds:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_when_idle_and_absolutely() -> None:
    clock = Seconds()
    codec = SessionCodec(b"k" * 64, clock)
    value = codec.issue("admin@a.test", "$argon2id$hash")
    session = codec.load(value)
    assert session is not None and session.email == "admin@a.test"
    clock.now += IDLE_SECONDS + 1
    assert codec.load(value) is None  # idle too long
    # Used every 20 minutes, a session still ends at the absolute limit.
    clock.now = 1_800_000_000.0
    value = codec.issue("admin@a.test", "$argon2id$hash")
    while True:
        clock.now += 20 * 60
        session = codec.load(value)
        if session is None:
            break
        value = codec.dump(session)
    assert ABSOLUTE_SECONDS < clock.now - 1_800_000_000.0 <= ABSOLUTE_SECONDS + 20 * 60
    assert session is None


def test_sessions_are_bound_to_the_secret_and_untampered() -> None:
    clock = Seconds()
    codec = SessionCodec(b"k" * 64, clock)
    value = codec.issue("admin@a.test", "$argon2id$hash")
    assert SessionCodec(b"j" * 64, clock).load(value) is None
    _payload, _, rest = value.partition(".")
    import base64
    import json

    forged = base64.urlsafe_b64encode(json.dumps({"e": "ops@p.example", "i": int(clock.now * 1000), "p": "x"})
                                      .encode()).decode().rstrip("=")
    assert codec.load(f"{forged}.{rest}") is None
    assert codec.load("") is None and codec.load("x" * 10_000) is None and codec.load("a.b.c") is None


# --- tenant policy ---------------------------------------------------------------------------------------

BASE = GatewayConfig.model_validate({"tenant": [{"name": "a.test", "domains": ["a.test"]},
                                                {"name": "b.test", "domains": ["b.test"]}]})


def test_overrides_lay_policy_over_the_base_and_skip_what_no_longer_validates() -> None:
    config = apply_overrides(BASE, {"a.test": {"isolation": "all", "retention_days": 7},
                                    "b.test": {"isolation": "everything"},
                                    "gone.test": {"isolation": "all"}})
    assert config.tenant("a.test").isolation == "all" and config.tenant("a.test").retention_days == 7
    assert config.tenant("b.test").isolation == "risky"  # invalid stored value: base kept
    assert BASE.tenant("a.test").isolation == "risky"  # the base object is not mutated
    assert config.tenant("a.test").domains == ["a.test"]


def test_policy_edits_cannot_touch_domains_or_delivery() -> None:
    tenant = TenantConfig(name="a.test", domains=["a.test"])
    with pytest.raises(PolicyError, match="not a policy field: domains"):
        with_policy(tenant, {"domains": ["evil.test"]})
    with pytest.raises(PolicyError, match="not a policy field: delivery"):
        with_policy(tenant, {"delivery": {"mode": "smtp", "host": "evil.example"}})


def test_saved_policy_is_read_back(store: SqliteAdminStore) -> None:
    tenant = with_policy(TenantConfig(name="a.test", domains=["a.test"]), {"isolation": "all"})
    store.save(tenant, "admin@a.test")
    assert store.overrides()["a.test"]["isolation"] == "all"
    assert "domains" not in store.overrides()["a.test"]


# --- identity from Cognito ---------------------------------------------------------------------------

@pytest.mark.parametrize(("claims", "expected"), [
    ({"email": "Admin@A.test", "custom:tenant": "a.test"}, ("admin@a.test", "a.test")),
    # A verified ID token carries the groups as a JSON array; a string is not trusted as one.
    ({"email": "ops@p.example", "cognito:groups": "[mailmoat-operators readers]"}, None),
    ({"email": "ops@p.example", "cognito:groups": ["mailmoat-operators"]}, ("ops@p.example", "*")),
    ({"email": "x@a.test"}, None),  # no tenant claim: no access
    ({"email": "x@a.test", "custom:tenant": "*"}, None),  # operators only by group
    ({"email": "x@a.test", "custom:tenant": "a.test", "email_verified": "false"}, None),
    ({"email": "x@a.test", "custom:tenant": "a.test", "email_verified": False}, None),
    ({"custom:tenant": "a.test"}, None),
    (None, None),
    ("claims", None),
])
def test_cognito_claims_map_to_an_admin(claims: Any, expected: tuple[str, str] | None) -> None:
    admin = admin_from_claims(claims)
    assert (None if admin is None else (admin.email, admin.tenant)) == expected
