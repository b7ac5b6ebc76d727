"""Keep-mail sign-in (issue 9): argon2 passwords, one-time codes to the alternate, limits, sessions."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest

from mailmoat.keepmail import (
    CODE_DIGITS,
    CODE_MAX_ATTEMPTS,
    SIGNIN_MAX_FAILURES,
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
    assert check_password(store, "ALICE@example.test ", PASSWORD, now) == "alice@example.test"
    with pytest.raises(SignInRefused):
        check_password(store, "alice@example.test", PASSWORD + "x", now)
    with pytest.raises(SignInRefused):
        check_password(store, "nobody@example.test", PASSWORD, now)


def test_wrong_passwords_lock_the_address_for_the_window(runtime) -> None:
    store = runtime.services.keepmail
    set_password(store, "alice@example.test", PASSWORD)
    now = runtime.services.clock.now()
    for _ in range(SIGNIN_MAX_FAILURES):
        with pytest.raises(SignInRefused) as refused:
            check_password(store, "alice@example.test", "wrong password!", now)
        assert not refused.value.limited
    with pytest.raises(SignInRefused) as refused:
        check_password(store, "alice@example.test", PASSWORD, now)
    assert refused.value.limited
    assert check_password(store, "alice@example.test", PASSWORD, now + timedelta(minutes=16))


def test_one_time_code_goes_to_the_alternate_and_works_once(runtime) -> None:
    store = runtime.services.keepmail
    store.set_alternate("alice@example.test", ALT)
    now = runtime.services.clock.now()
    assert send_code(store, runtime.services, "alice@example.test", now) is True
    code = code_from(runtime)
    assert store.code("alice@example.test").code_sha.startswith("$argon2")  # stored hashed
    assert send_code(store, runtime.services, "alice@example.test", now) is False  # not again at once
    assert len(maildir(runtime, ALT)) == 1
    assert check_code(store, "alice@example.test", code, now) == "alice@example.test"
    with pytest.raises(SignInRefused):
        check_code(store, "alice@example.test", code, now)  # one time


def test_codes_expire_and_wrong_entries_void_them(runtime) -> None:
    store = runtime.services.keepmail
    store.set_alternate("alice@example.test", ALT)
    now = runtime.services.clock.now()
    send_code(store, runtime.services, "alice@example.test", now)
    code = code_from(runtime)
    with pytest.raises(SignInRefused):
        check_code(store, "alice@example.test", code, now + timedelta(minutes=11))
    later = now + timedelta(minutes=2)
    send_code(store, runtime.services, "alice@example.test", later)
    code = code_from(runtime)
    wrong = f"{(int(code) + 1) % 10 ** CODE_DIGITS:0{CODE_DIGITS}d}"
    for _ in range(CODE_MAX_ATTEMPTS):
        with pytest.raises(SignInRefused):
            check_code(store, "alice@example.test", wrong, later)
    with pytest.raises(SignInRefused) as refused:
        check_code(store, "alice@example.test", code, later)
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
    assert check_password(store, "alice@example.test", PASSWORD, runtime.services.clock.now())
    assert "not a recipient" in capsys.readouterr().err
