"""CSRF tokens bound to the browser's cookie and session (issue 19, item 9). Any value used to
pass when cookie and form field matched, so a page that could plant a cookie (a sibling
subdomain over plain HTTP) could forge every POST; and the cookie had no `__Host-` prefix.
Now the token is an HMAC of the cookie and the session, and over HTTPS the cookie is
`__Host-mm_csrf` (Secure, Path=/, no Domain)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mailmoat.runtime import Runtime
from mailmoat_web.app import create_app
from tests.unit.admin.helpers import PASSWORD, add_admin, make_runtime
from tests.webforms import form_csrf


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    rt = make_runtime(tmp_path)
    add_admin(rt, "admin@example.test", "example.test")
    add_admin(rt, "other@example.test", "example.test")
    return rt


def _client(runtime: Runtime, base_url: str = "http://testserver") -> TestClient:
    return TestClient(create_app(runtime, sweep_every=None), base_url=base_url)


def _sign_in(client: TestClient, email: str) -> None:
    token = form_csrf(client.get("/admin/login").text)
    response = client.post("/admin/login", data={"csrf": token, "email": email, "password": PASSWORD},
                           follow_redirects=False)
    assert response.status_code == 303, response.text


@pytest.mark.parametrize(("path", "form"), [
    ("/admin/login", {"email": "admin@example.test", "password": PASSWORD}),
    ("/k/signin", {"address": "alice@example.test", "password": "x" * 12}),
])
def test_an_attacker_chosen_matching_pair_is_refused(runtime: Runtime, path: str, form: dict[str, str]) -> None:
    client = _client(runtime)
    client.cookies.set("mm_csrf", "planted-by-a-sibling-subdomain")
    response = client.post(path, data={"csrf": "planted-by-a-sibling-subdomain", **form},
                           follow_redirects=False)
    assert response.status_code == 403


def test_a_signed_in_console_refuses_a_planted_pair(runtime: Runtime) -> None:
    client = _client(runtime)
    _sign_in(client, "admin@example.test")
    client.cookies.set("mm_csrf", "x" * 43)
    response = client.post("/admin/logout", data={"csrf": "x" * 43}, follow_redirects=False)
    assert response.status_code == 403


def test_a_token_from_another_session_is_refused(runtime: Runtime) -> None:
    victim = _client(runtime)
    _sign_in(victim, "admin@example.test")
    attacker = _client(runtime)
    _sign_in(attacker, "other@example.test")
    # The attacker's own valid token, with the victim's CSRF cookie planted beside it.
    attacker_token = form_csrf(attacker.get("/admin/", follow_redirects=True).text)
    victim.cookies.set("mm_csrf", attacker.cookies["mm_csrf"])
    response = victim.post("/admin/logout", data={"csrf": attacker_token}, follow_redirects=False)
    assert response.status_code == 403
    own = form_csrf(victim.get("/admin/", follow_redirects=True).text)
    assert victim.post("/admin/logout", data={"csrf": own}, follow_redirects=False).status_code in (200, 303)


def test_over_https_the_cookie_is_host_prefixed(runtime: Runtime) -> None:
    client = _client(runtime, base_url="https://portal.example.test")
    page = client.get("/admin/login")
    header = next(v for k, v in page.headers.multi_items() if k == "set-cookie" and "mm_csrf" in v)
    assert header.startswith("__Host-mm_csrf=")
    assert "Secure" in header and "Path=/" in header and "Domain" not in header
    token = form_csrf(page.text)
    signed = client.post("/admin/login", data={"csrf": token, "email": "admin@example.test",
                                               "password": PASSWORD}, follow_redirects=False)
    assert signed.status_code == 303
