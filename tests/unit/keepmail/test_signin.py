"""Keep-mail sign-in (issue 9): argon2 passwords, one-time codes to the alternate, limits, sessions."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest

from mailmoat.attempts import KEEPMAIL_ACCOUNT, AttemptLimiter
from mailmoat.keepmail import (
    CODE_DIGITS,
    CODE_MAX_ATTEMPTS,
    SignInRefused,
    check_code,
    check_password,
    close_session,
    open_session,
    send_code,
    session_address,
    set_password,
)
from mailmoat.local.cli import main
from tests.unit.keepmail.helpers import PASSWORD, maildir, make_runtime

ALT = "alice.home@alt.example"


@pytest.fixture
def runtime(tmp_path: Path):
    return make_runtime(tmp_path)


IP = "192.0.2.10"


def limiter(runtime, at: list) -> AttemptLimiter:
    """The runtime's attempt store on a clock the test moves (at[0])."""
    return AttemptLimiter(runtime.services.attempts, lambda: at[0])


def code_from(runtime, address: str = ALT) -> str:
    latest = maildir(runtime, address)[-1]
    msg = email.message_from_bytes(latest.read_bytes(), policy=policy.default)
    return re.findall(rf"\b\d{{{CODE_DIGITS}}}\b", msg.get_body(("plain",)).get_content())[0]


def test_password_is_stored_as_argon2_and_checked(runtime) -> None:
    store = runtime.services.keepmail
    now = runtime.services.clock.now()
    with pytest.raises(ValueError):
        set_password(store, "alice@example.test", "short")
    set_password(store, "Alice@Example.test", PASSWORD)
    assert store.password_hash("alice@example.test").startswith("$argon2id$")
    assert PASSWORD not in store.password_hash("alice@example.test")
    limits = limiter(runtime, [now])
    assert check_password(store, limits, "ALICE@example.test ", PASSWORD, IP) == "alice@example.test"
    with pytest.raises(SignInRefused):
        check_password(store, limits, "alice@example.test", PASSWORD + "x", IP)
    with pytest.raises(SignInRefused):
        check_password(store, limits, "nobody@example.test", PASSWORD, IP)


def test_wrong_passwords_make_the_address_wait_and_the_wait_doubles(runtime) -> None:
    store = runtime.services.keepmail
    set_password(store, "alice@example.test", PASSWORD)
    at = [runtime.services.clock.now()]
    limits = limiter(runtime, at)
    for _ in range(KEEPMAIL_ACCOUNT.free):
        with pytest.raises(SignInRefused) as refused:
            check_password(store, limits, "alice@example.test", "wrong password!", IP)
        assert not refused.value.limited
    # From another network too: the limit is the account's, whoever asks.
    with pytest.raises(SignInRefused) as refused:
        check_password(store, limits, "alice@example.test", PASSWORD, "198.51.100.1")
    assert refused.value.limited
    # A back-off, not a lock-out: the owner gets in after the (short) wait.
    at[0] += KEEPMAIL_ACCOUNT.first_delay
    assert check_password(store, limits, "alice@example.test", PASSWORD, IP) == "alice@example.test"


def test_one_time_code_goes_to_the_alternate_and_works_once(runtime) -> None:
    store = runtime.services.keepmail
    store.set_alternate("alice@example.test", ALT)
    now = runtime.services.clock.now()
    assert send_code(store, runtime.services, "alice@example.test", now) is True
    code = code_from(runtime)
    assert store.code("alice@example.test").code_sha.startswith("$argon2")  # stored hashed
    assert send_code(store, runtime.services, "alice@example.test", now) is False  # not again at once
    assert len(maildir(runtime, ALT)) == 1
    limits = limiter(runtime, [now])
    assert check_code(store, limits, "alice@example.test", code, IP, now) == "alice@example.test"
    with pytest.raises(SignInRefused):
        check_code(store, limiter(runtime, [now]), "alice@example.test", code, IP, now)  # one time


def test_codes_expire_and_wrong_entries_void_them(runtime) -> None:
    store = runtime.services.keepmail
    store.set_alternate("alice@example.test", ALT)
    now = runtime.services.clock.now()
    send_code(store, runtime.services, "alice@example.test", now)
    code = code_from(runtime)
    expired = now + timedelta(minutes=11)
    with pytest.raises(SignInRefused):
        check_code(store, limiter(runtime, [expired]), "alice@example.test", code, IP, expired)
    later = now + timedelta(minutes=2)
    send_code(store, runtime.services, "alice@example.test", later)
    code = code_from(runtime)
    wrong = f"{(int(code) + 1) % 10 ** CODE_DIGITS:0{CODE_DIGITS}d}"
    for _ in range(CODE_MAX_ATTEMPTS):
        with pytest.raises(SignInRefused):
            check_code(store, limiter(runtime, [later]), "alice@example.test", wrong, IP, later)
    with pytest.raises(SignInRefused) as refused:
        check_code(store, limiter(runtime, [later]), "alice@example.test", code, IP, later)
    assert refused.value.limited


def test_no_alternate_no_code(runtime) -> None:
    store = runtime.services.keepmail
    now = runtime.services.clock.now()
    assert send_code(store, runtime.services, "alice@example.test", now) is False
    store.set_alternate("stranger@example.test", ALT)  # not a recipient of ours
    assert send_code(store, runtime.services, "stranger@example.test", now) is False
    assert maildir(runtime, ALT) == []


def test_sessions_open_resolve_expire_and_close(runtime) -> None:
    store = runtime.services.keepmail
    now = runtime.services.clock.now()
    token = open_session(store, "alice@example.test", now)
    assert len(token) >= 40
    assert session_address(store, token, now) == "alice@example.test"
    assert session_address(store, token, now + timedelta(hours=9)) is None
    assert session_address(store, token + "x", now) is None
    close_session(store, token)
    assert session_address(store, token, now) is None


def test_cli_sets_password_and_alternate(tmp_path: Path, monkeypatch, capsys) -> None:
    import io

    from tests.conftest import DEMO_CONFIG

    data = tmp_path / "var"
    monkeypatch.setenv("MAILMOAT_MODE", "test")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["--data-dir", str(data), "--config", str(DEMO_CONFIG), "keepmail", "set-password",
                 "alice@example.test", "--password-stdin"]) == 0
    assert main(["--data-dir", str(data), "--config", str(DEMO_CONFIG), "keepmail", "set-alternate",
                 "alice@example.test", ALT]) == 0
    assert main(["--data-dir", str(data), "--config", str(DEMO_CONFIG), "keepmail", "set-alternate",
                 "nobody@example.test", ALT]) == 1
    assert main(["--data-dir", str(data), "--config", str(DEMO_CONFIG), "keepmail", "sweep"]) == 0
    runtime = make_runtime(tmp_path)
    store = runtime.services.keepmail
    assert store.alternate("alice@example.test") == ALT
    assert check_password(store, limiter(runtime, [runtime.services.clock.now()]),
                          "alice@example.test", PASSWORD, IP)
    assert "not a recipient" in capsys.readouterr().err
