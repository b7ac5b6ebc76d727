"""`mailmoat admin create|list|audit` on a real data directory, and signing in with the result."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mailmoat.local.cli import main
from tests.unit.admin.helpers import CONFIG, ZONE, make_runtime, open_console


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (tmp_path / "tenants.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("MAILMOAT_DNS_ZONE", str(ZONE))
    monkeypatch.setenv("MAILMOAT_MODE", "test")

    def run(*args: str, stdin: str = "") -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return main(["--data-dir", str(tmp_path / "var"), "--config", str(tmp_path / "tenants.toml"),
                     "admin", *args])

    return run


def test_create_then_sign_in(cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert cli("create", "--tenant", "example.test", "--email", "Admin@Example.test", "--password-stdin",
               stdin="a long enough passphrase\n") == 0
    assert "created admin admin@example.test (tenant example.test)" in capsys.readouterr().out
    assert cli("create", "--all-tenants", "--email", "ops@provider.example", "--password-stdin",
               stdin="another long passphrase\n") == 0
    assert "OPERATOR of all tenants" in capsys.readouterr().out
    assert cli("list") == 0
    listing = capsys.readouterr().out
    assert "admin@example.test\texample.test" in listing
    assert "ops@provider.example\tALL TENANTS (operator)" in listing
    assert "passphrase" not in listing and "argon2" not in listing
    console = open_console(make_runtime(tmp_path))
    assert console.login("admin@example.test", "a long enough passphrase").status_code == 303
    assert cli("audit", "--tenant", "example.test") == 0
    assert "login" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("--tenant", "nowhere.test", "--email", "a@example.test"), "a long enough passphrase\n", "no tenant"),
    (("--tenant", "example.test", "--email", "a@example.test"), "short\n", "at least 12"),
    (("--tenant", "example.test", "--email", "not-an-address"), "a long enough passphrase\n", "e-mail"),
])
def test_create_refuses_with_a_reason(cli, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],  # type: ignore[no-untyped-def]
                                      stdin: str, message: str) -> None:
    assert cli("create", *args, "--password-stdin", stdin=stdin) == 1
    assert message in capsys.readouterr().err


def test_a_duplicate_account_is_refused(cli, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    args = ("create", "--tenant", "example.test", "--email", "a@example.test", "--password-stdin")
    assert cli(*args, stdin="a long enough passphrase\n") == 0
    assert cli(*args, stdin="a different passphrase\n") == 1
    assert "already exists" in capsys.readouterr().err


def test_tenant_or_all_tenants_is_required(cli) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        cli("create", "--email", "a@example.test", "--password-stdin")
    with pytest.raises(SystemExit):
        cli("create", "--tenant", "example.test", "--all-tenants", "--email", "a@example.test")


def test_the_prompt_asks_twice(cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    answers = iter(["a long enough passphrase", "a different one entirely"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli("create", "--tenant", "example.test", "--email", "a@example.test") == 1
    assert "differ" in capsys.readouterr().err
