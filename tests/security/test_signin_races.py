"""Sign-in limits that parallel requests cannot outrun (issue 19, item 3).

The attack run sent its guesses at once: the failure count was read before the slow password
check and written after it, so 40 parallel admin sign-ins had 40 passwords checked against a
limit of 5 (keep-mail 44 of 60, portal unlock 7 of 40). And the admin limit was per (account,
address), so another source address started afresh. Here the portal runs as `mailmoat serve`
runs it (uvicorn on loopback, its thread pool), every guess comes from its own /24 (loopback is
127.0.0.0/8), and the test counts how many credentials were really checked.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import argon2
import pytest
import pyzipper
import uvicorn

from mailmoat_web.app import create_app

LIMIT = 5  # the free attempts of an account, a keep-mail address and an encrypted file
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@contextmanager
def serving(runtime: Any) -> Iterator[int]:
    """The portal on 127.0.0.1, as `mailmoat serve` runs it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(runtime, sweep_every=None), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the portal did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Browser:
    """One attacker connection from its own source network (127.<n>.0.1), with its cookies."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.source, self.cookies = port, f"127.{n % 250 + 1}.{n // 250}.1", {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60,
                                          source_address=(self.source, 0))
        try:
            from urllib.parse import urlencode

            body = urlencode(form) if form is not None else None
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key] = rest.split(";", 1)[0]
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def form_token(self, path: str) -> str:
        status, html = self.request("GET", path)
        assert status == 200, html[:500]
        match = CSRF.search(html)
        assert match, f"no CSRF field on {path}"
        return match.group(1)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Callable[[type, str], list[int]]:
    """Counts calls of a credential check (and makes each take 50 ms, as a loaded server's would)."""
    def count(cls: type, name: str) -> list[int]:
        calls: list[int] = []
        original = getattr(cls, name)

        def checking(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            time.sleep(0.05)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, checking)
        return calls
    return count


def race(port: int, n: int, path_for_form: str, post: str, form: dict[str, str]) -> list[int]:
    """n browsers load the form, then all post at once; their status codes."""
    browsers = [Browser(port, i) for i in range(n)]
    tokens = [b.form_token(path_for_form) for b in browsers]
    start = threading.Barrier(n)

    def guess(i: int) -> int:
        start.wait(timeout=30)
        return browsers[i].request("POST", post, {**form, "csrf": tokens[i]})[0]

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(guess, range(n), timeout=120))


def test_parallel_admin_sign_ins_from_many_networks_check_at_most_the_limit(
        tmp_path: Path, counted: Callable[[type, str], list[int]]) -> None:
    from tests.unit.admin.helpers import add_admin, make_runtime

    runtime = make_runtime(tmp_path)
    add_admin(runtime, "admin@example.test", "example.test")
    checks = counted(argon2.PasswordHasher, "verify")
    with serving(runtime) as port:
        statuses = race(port, 40, "/admin/login", "/admin/login",
                        {"email": "admin@example.test", "password": "not the password at all"})
    assert len(checks) <= LIMIT, f"{len(checks)} passwords checked for a limit of {LIMIT}"
    assert statuses.count(401) == len(checks) and statuses.count(429) == 40 - len(checks)


def test_parallel_keepmail_sign_ins_check_at_most_the_limit_and_the_owner_only_waits(
        tmp_path: Path, counted: Callable[[type, str], list[int]]) -> None:
    from mailmoat.keepmail import set_password
    from tests.unit.keepmail.helpers import PASSWORD, make_runtime

    runtime = make_runtime(tmp_path)
    set_password(runtime.services.keepmail, "alice@example.test", PASSWORD)
    checks = counted(argon2.PasswordHasher, "verify")
    with serving(runtime) as port:
        statuses = race(port, 60, "/k", "/k/signin",
                        {"address": "alice@example.test", "password": "a wrong password"})
    assert len(checks) <= LIMIT, f"{len(checks)} passwords checked for a limit of {LIMIT}"
    assert statuses.count(429) >= 60 - LIMIT
    # Not locked out for the window: the counter asks for a short wait, doubling from there.
    from mailmoat.attempts import KEEPMAIL_ACCOUNT

    state = runtime.services.attempts.transition(
        "keepmail-account|alice@example.test", lambda s: (s, s), runtime.services.clock.now())
    assert state is not None and state.next_at is not None
    assert state.next_at - runtime.services.clock.now() <= KEEPMAIL_ACCOUNT.first_delay


def test_parallel_portal_unlocks_try_at_most_the_limit(
        tmp_path: Path, counted: Callable[[type, str], list[int]]) -> None:
    from tests.e2e.test_portal import MEMBERS, token_for
    from tests.unit.isolation.builders import aes_zip, analyse, make_runtime, message

    runtime = make_runtime(tmp_path / "var")
    ctx = analyse(runtime, message(("請求書.zip", aes_zip(MEMBERS), "application/zip")))
    token = token_for(ctx)
    path = next(a.path for a in ctx.attachments if a.filename == "請求書.zip")
    tries = counted(pyzipper.AESZipFile, "setpassword")
    with serving(runtime) as port:
        statuses = race(port, 40, f"/m/{token}", f"/m/{token}/f/{path}/unlock",
                        {"password": "a wrong password"})
    assert len(tries) <= LIMIT, f"{len(tries)} passwords tried for a limit of {LIMIT}"
    assert statuses.count(429) >= 40 - LIMIT
