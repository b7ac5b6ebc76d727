"""The admin console through FastAPI's TestClient on a real data directory (SQLite, files, Maildir)."""

from __future__ import annotations

import dataclasses
import re
from email import message_from_bytes, policy

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.isolation import resolve
from mailmoat.runtime import Runtime
from mailmoat_web.admin.session import SESSION_COOKIE
from tests.unit.admin.helpers import (
    OTHER_PASSWORD,
    Console,
    add_admin,
    add_operator,
    admin_store,
    mail,
    open_console,
    receive,
    text_of,
)
from tests.unit.isolation.builders import PASSWORD as ZIP_PASSWORD
from tests.unit.isolation.builders import XSS, aes_zip

TRACE = "/admin/t/example.test/trace"


def actions(runtime: Runtime, tenant: str) -> list[str]:
    return [e.action for e in admin_store(runtime).entries(tenant)]


# --- sign-in and the session -----------------------------------------------------------------------

def test_pages_need_a_signed_in_admin(console: Console) -> None:
    for path in ("/admin/", TRACE, "/admin/t/example.test/policy", "/admin/t/example.test/recipients"):
        response = console.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/admin/login"


def test_sign_in_sets_a_strict_httponly_session_cookie_and_is_audited(console: Console,
                                                                      runtime: Runtime) -> None:
    response = console.login("admin@example.test")
    assert response.status_code == 303 and response.headers["location"] == "/admin/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    assert console.get("/admin/").headers["location"] == TRACE
    assert console.get(TRACE).status_code == 200
    entry = admin_store(runtime).entries("example.test")[0]
    assert (entry.action, entry.admin, entry.client_ip) == ("login", "admin@example.test", "testclient")


def test_session_cookie_is_secure_on_https(runtime: Runtime) -> None:
    console = open_console(runtime, base_url="https://gateway.example")
    response = console.login("admin@example.test")
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


def test_wrong_password_is_refused_and_audited_without_the_password(console: Console,
                                                                   runtime: Runtime) -> None:
    response = console.login("admin@example.test", "not the password at all")
    assert response.status_code == 401
    assert "パスワードが違います" in response.text
    assert SESSION_COOKIE not in response.cookies
    entries = admin_store(runtime).entries("example.test")
    assert [e.action for e in entries] == ["login.failed"]
    assert "not the password" not in repr(entries)
    # An unknown account gets the same answer.
    unknown = console.login("nobody@example.test", "whatever it is")
    assert unknown.status_code == 401
    assert unknown.text.replace("nobody@", "admin@") == response.text


def test_sign_in_is_rate_limited_per_account_and_address(console: Console, runtime: Runtime) -> None:
    for _ in range(5):
        assert console.login("admin@example.test", "wrong wrong wrong").status_code == 401
    limited = console.login("admin@example.test")  # even the right password, for now
    assert limited.status_code == 429
    assert "login.limited" in actions(runtime, "example.test")
    # Another account from the same address is not locked out by these failures.
    assert console.login("admin@other.test", "correct horse battery staple").status_code == 303


def test_sign_in_without_the_csrf_value_is_refused(console: Console) -> None:
    console.client.get("/admin/login")
    response = console.client.post("/admin/login", data={"email": "admin@example.test",
                                                          "password": "correct horse battery staple"},
                                   follow_redirects=False)
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies


def test_forged_or_portal_tokens_never_open_the_console(console: Console, runtime: Runtime) -> None:
    ctx_id = receive(runtime, mail(attachments=(("請求書.zip", aes_zip({"a.txt": b"x"}), "application/zip"),)),
                     ["alice@example.test"])
    maildir = runtime.settings.data_dir / "maildir" / "example.test" / "alice" / "new"
    delivered = next(maildir.iterdir()).read_bytes()
    body = next(str(p.get_content()) for p in message_from_bytes(delivered, policy=policy.default).walk()
                if p.get_content_type() == "text/plain")
    token = re.findall(r"/m/([A-Za-z0-9_-]+)", body)[0]
    assert console.get(f"/m/{token}").status_code == 200  # the portal link works …
    assert console.get(TRACE).status_code == 303  # … and opens no admin page
    for value in (token, "e30.aaaa.bbbb", f"{token}.{token}"):
        console.client.cookies.set(SESSION_COOKIE, value, path="/admin")
        assert console.get(TRACE).status_code == 303
        assert console.get(f"/admin/t/example.test/messages/{ctx_id}").status_code == 303


def test_sign_out_ends_the_session_even_for_a_kept_copy_of_the_cookie(signed_in: Console,
                                                                     runtime: Runtime) -> None:
    cookie = signed_in.client.cookies[SESSION_COOKIE]
    response = signed_in.post("/admin/logout")
    assert response.status_code == 303
    assert signed_in.get(TRACE).status_code == 303
    assert "logout" in actions(runtime, "example.test")
    signed_in.client.cookies.set(SESSION_COOKIE, cookie, path="/admin")
    assert signed_in.get(TRACE).status_code == 303
    signed_in.client.cookies.delete(SESSION_COOKIE)
    assert signed_in.login("admin@example.test").status_code == 303  # a new sign-in works
    assert signed_in.get(TRACE).status_code == 200


def test_a_new_password_ends_existing_sessions(signed_in: Console, runtime: Runtime) -> None:
    from mailmoat.admin.accounts import hash_password

    admin_store(runtime).set_password_hash("admin@example.test", hash_password("a brand new passphrase"))
    assert signed_in.get(TRACE).status_code == 303


# --- tenant separation ------------------------------------------------------------------------------

@pytest.fixture
def two_tenants(runtime: Runtime) -> dict[str, str]:
    own = receive(runtime, mail(subject="for alice"), ["alice@example.test"])
    other = receive(runtime, mail(to="carol@other.test", subject="carol secret plans"), ["carol@other.test"])
    isolated = receive(runtime, mail(to="carol@other.test", subject="carol zip",
                                     attachments=(("x.zip", aes_zip({"a.txt": b"x"}), "application/zip"),)),
                       ["carol@other.test"])
    runtime.services.log.update(other, state="held", error="test hold")
    return {"own": own, "other": other, "other_isolated": isolated}


def test_an_admin_sees_only_their_tenant(signed_in: Console, two_tenants: dict[str, str]) -> None:
    trace = signed_in.get(TRACE).text
    assert "for alice" in trace and "carol" not in trace
    assert two_tenants["other"] not in signed_in.get("/admin/t/example.test/held").text
    assert "carol" not in signed_in.get("/admin/t/example.test/isolated").text
    assert "carol" not in signed_in.get("/admin/t/example.test/recipients").text
    assert "carol" not in signed_in.get("/admin/t/example.test/audit").text


@pytest.mark.parametrize("path", [
    "/admin/t/other.test/trace", "/admin/t/other.test/held", "/admin/t/other.test/isolated",
    "/admin/t/other.test/recipients", "/admin/t/other.test/recipients/carol%40other.test",
    "/admin/t/other.test/import", "/admin/t/other.test/policy", "/admin/t/other.test/audit",
    "/admin/t/no-such-tenant/trace", "/admin/t/%2A/trace",
])
def test_another_tenants_pages_are_404(signed_in: Console, two_tenants: dict[str, str], path: str) -> None:
    assert signed_in.get(path).status_code == 404


def test_guessing_another_tenants_ids_in_own_urls_is_404(signed_in: Console, two_tenants: dict[str, str],
                                                         runtime: Runtime) -> None:
    other, other_iso = two_tenants["other"], two_tenants["other_isolated"]
    base = "/admin/t/example.test"
    assert signed_in.get(f"{base}/messages/{other}").status_code == 404
    assert signed_in.get(f"{base}/messages/{other_iso}").status_code == 404
    assert signed_in.get(f"{base}/messages/{'x' * 500}").status_code == 404
    assert signed_in.post(f"{base}/messages/{other}/raw").status_code == 404
    assert signed_in.post(f"{base}/messages/{other}/redrive").status_code == 404
    assert signed_in.post(f"/admin/t/other.test/messages/{other}/redrive").status_code == 404
    assert signed_in.post(f"{base}/isolated/{other_iso}/revoke",
                          recipient="carol@other.test").status_code == 404
    assert signed_in.get(f"{base}/recipients/carol%40other.test").status_code == 404
    assert signed_in.post(f"{base}/recipients/carol%40other.test", name="pwned").status_code == 404
    assert signed_in.post(f"{base}/recipients/carol%40other.test/spam", spam_filter="0").status_code == 404
    assert signed_in.post("/admin/t/other.test/policy", isolation="all").status_code == 404
    # Nothing of the other tenant changed.
    assert runtime.services.log.get(other).state == "held"  # type: ignore[union-attr]
    assert runtime.services.directory.recipient("carol@other.test").name == "Carol Other"  # type: ignore[union-attr]
    assert runtime.services.isolation.links(other_iso)
    assert runtime.services.config.tenant("other.test").isolation == "risky"


def test_import_cannot_reach_another_tenants_addresses(signed_in: Console, runtime: Runtime) -> None:
    response = signed_in.client.post("/admin/t/example.test/import", data={
        "csrf": signed_in.csrf, "step": "apply", "csv_text": "carol@other.test,Pwned\n"})
    assert response.status_code == 422
    assert "line 1" in response.text and "carol@other.test" in response.text
    assert runtime.services.directory.recipient("carol@other.test").name == "Carol Other"  # type: ignore[union-attr]


def test_an_operator_reaches_every_tenant_and_is_marked(runtime: Runtime, two_tenants: dict[str, str]
                                                        ) -> None:
    add_operator(runtime)
    console = open_console(runtime)
    assert console.login("ops@provider.example").status_code == 303
    home = console.get("/admin/")
    assert home.status_code == 200
    assert "example.test" in home.text and "other.test" in home.text
    assert "operator-banner" in home.text
    page = console.get(f"/admin/t/other.test/messages/{two_tenants['other']}")
    assert page.status_code == 200 and "operator-banner" in page.text
    assert console.get("/admin/t/example.test/trace").status_code == 200


# --- CSRF on every POST -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/admin/logout", "/admin/t/example.test/policy", "/admin/t/example.test/import",
    "/admin/t/example.test/export", "/admin/t/example.test/recipients/alice%40example.test",
    "/admin/t/example.test/recipients/alice%40example.test/spam",
])
def test_posts_without_the_csrf_value_are_refused(signed_in: Console, runtime: Runtime, path: str) -> None:
    before = actions(runtime, "example.test")
    for data in ({}, {"csrf": "forged-value"}):
        response = signed_in.client.post(path, data={**data, "isolation": "all", "name": "x",
                                                     "spam_filter": "0"}, follow_redirects=False)
        assert response.status_code == 403
    assert actions(runtime, "example.test") == before
    assert runtime.services.config.tenant("example.test").isolation == "risky"
    assert runtime.services.directory.recipient("alice@example.test").spam_filter  # type: ignore[union-attr]


# --- message trace -----------------------------------------------------------------------------------

def test_trace_search_filters_and_pages(signed_in: Console, runtime: Runtime) -> None:
    receive(runtime, mail(subject="請求書 11月分"), ["alice@example.test"])
    receive(runtime, mail(subject="meeting notes", sender="boss@partner.example"), ["bob@example.test"],
            sender="boss@partner.example")
    receive(runtime, mail(subject="100% off_sale"), ["bob@example.test"])
    text = text_of(signed_in.get(TRACE, params={"subject": "請求書"}).text)
    assert "請求書 11月分" in text and "meeting notes" not in text
    text = text_of(signed_in.get(TRACE, params={"sender": "partner.example"}).text)
    assert "meeting notes" in text and "請求書" not in text
    text = text_of(signed_in.get(TRACE, params={"recipient": "bob@"}).text)
    assert "meeting notes" in text and "100% off_sale" in text and "請求書" not in text
    # LIKE wildcards in the user's text are literal characters.
    assert "100% off_sale" in signed_in.get(TRACE, params={"subject": "0% o"}).text
    assert "meeting" not in signed_in.get(TRACE, params={"subject": "%"}).text
    assert "100% off_sale" not in signed_in.get(TRACE, params={"subject": "f_s_"}).text
    assert "meeting notes" in signed_in.get(TRACE, params={"state": "delivered", "since": "2000-01-01"}).text
    assert "admin.none" not in signed_in.get(TRACE, params={"until": "2000-01-01"}).text
    assert "meeting notes" not in signed_in.get(TRACE, params={"until": "2000-01-01"}).text
    bad = signed_in.get(TRACE, params={"since": "yesterday", "state": "bogus"})
    assert bad.status_code == 200 and "since" in bad.text and "state" in bad.text


def test_trace_verdict_and_symbol_search(signed_in: Console, runtime: Runtime) -> None:
    receive(runtime, mail(subject="with zip", attachments=(("a.zip", aes_zip({"a.txt": b"x"}),
                                                                "application/zip"),)), ["alice@example.test"])
    receive(runtime, mail(subject="plain one"), ["alice@example.test"])
    text = signed_in.get(TRACE, params={"verdict": "encrypted"}).text
    assert "with zip" in text and "plain one" not in text
    text = signed_in.get(TRACE, params={"symbol": "encrypted_archive"}).text
    assert "with zip" in text and "plain one" not in text


def test_message_detail_shows_route_auth_findings_stages_and_deliveries(signed_in: Console,
                                                                        runtime: Runtime) -> None:
    raw = mail(subject=XSS, attachments=(("請求書.zip", aes_zip({"a.txt": b"x"}), "application/zip"),))
    raw = (b"Received: from relay.sender.example (relay.sender.example [198.51.100.7]) by "
           b"mx.sender.example with ESMTP id r1; Fri, 27 Nov 2026 10:00:00 +0900\r\n" + raw)
    message_id = receive(runtime, raw, ["alice@example.test", "bob@example.test"])
    response = signed_in.get(f"/admin/t/example.test/messages/{message_id}")
    assert response.status_code == 200
    html = response.text
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html  # escaped, not markup
    text = text_of(html)
    assert "\U0001F1EF\U0001F1F5 JP 203.0.113.5" in text  # 🇯🇵 with the hop
    assert "\U0001F1FA\U0001F1F8 US 198.51.100.7" in text
    assert "route-warning" in html  # two countries
    assert "SPF none" in text and "DMARC none" in text
    assert "ENCRYPTED_ARCHIVE" in text and "請求書.zip" in text and "isolate" in text
    for stage in ("authenticate", "scan", "isolate", "rewrite", "deliver"):
        assert re.search(rf"{stage} \d+\.\d ok", text), stage
    assert re.search(r"alice@example\.test delivered", text) and re.search(r"bob@example\.test delivered", text)
    assert "arc-seal" in text
    assert "<script" not in html and "style=" not in html


def test_raw_download_is_a_post_and_audited(signed_in: Console, runtime: Runtime) -> None:
    raw = mail(subject="original please")
    message_id = receive(runtime, raw, ["alice@example.test"])
    url = f"/admin/t/example.test/messages/{message_id}/raw"
    assert signed_in.get(url).status_code in (404, 405)  # no download by GET
    assert "message.download" not in actions(runtime, "example.test")
    response = signed_in.post(url)
    assert response.status_code == 200
    assert response.content == raw
    assert response.headers["content-type"] == "application/octet-stream"
    assert f'filename="{message_id}.eml"' in response.headers["content-disposition"]
    entry = admin_store(runtime).entries("example.test")[0]
    assert (entry.action, entry.target, entry.admin) == ("message.download", message_id, "admin@example.test")


# --- held mail --------------------------------------------------------------------------------------

def test_a_held_message_is_listed_and_redriven_with_an_audit_entry(signed_in: Console,
                                                                   runtime: Runtime) -> None:
    working = runtime.services.mailer_for
    runtime.services.mailer_for = lambda _tenant: _BrokenMailer()
    # Held at the first failure (no retries), so the redrive below is the only other attempt.
    runtime.runner.policy = dataclasses.replace(runtime.runner.policy, stage_max_attempts=1)
    message_id = receive(runtime, mail(subject="stuck one"), ["alice@example.test"])
    runtime.services.mailer_for = working  # the fix
    assert runtime.services.log.get(message_id).state == "held"  # type: ignore[union-attr]
    held = signed_in.get("/admin/t/example.test/held")
    assert "stuck one" in held.text and "stage deliver failed" in held.text
    detail = signed_in.get(f"/admin/t/example.test/messages/{message_id}").text
    assert "STAGE_FAILED" in detail and "mailbox host misconfigured" in detail
    # A GET never re-drives.
    assert signed_in.get(f"/admin/t/example.test/messages/{message_id}/redrive").status_code in (404, 405)
    assert runtime.services.log.get(message_id).state == "held"  # type: ignore[union-attr]
    response = signed_in.post(f"/admin/t/example.test/messages/{message_id}/redrive")
    assert response.status_code == 303
    assert runtime.services.log.get(message_id).state == "delivered"  # type: ignore[union-attr]
    shown = signed_in.get(response.headers["location"])
    assert "再処理しました。現在の状態：配送済み" in shown.text
    entry = admin_store(runtime).entries("example.test")[0]
    assert (entry.action, entry.target) == ("message.redrive", message_id)
    assert "stuck one" not in signed_in.get("/admin/t/example.test/held").text
    # A delivered message is not re-driven again (no second copy).
    signed_in.post(f"/admin/t/example.test/messages/{message_id}/redrive")
    assert [a for a in actions(runtime, "example.test") if a == "message.redrive"] == ["message.redrive"]


class _BrokenMailer:
    """A delivery adapter that fails in a way no retry fixes: the deliver stage holds the message."""

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        raise RuntimeError("mailbox host misconfigured")


# --- isolated files ------------------------------------------------------------------------------------

def test_isolated_files_are_listed_and_a_link_revoked(signed_in: Console, runtime: Runtime) -> None:
    message_id = receive(runtime, mail(subject="zip inside", attachments=(
        ("請求書.zip", aes_zip({"a.txt": b"x"}, ZIP_PASSWORD), "application/zip"),)),
        ["alice@example.test", "bob@example.test"])
    store = runtime.services.isolation
    page = signed_in.get("/admin/t/example.test/isolated")
    assert "zip inside" in page.text and "請求書.zip" in page.text
    assert "alice@example.test" in page.text and "bob@example.test" in page.text
    maildir = runtime.settings.data_dir / "maildir" / "example.test" / "alice" / "new"
    token = re.findall(rb"/m/([A-Za-z0-9_-]+)", next(maildir.iterdir()).read_bytes())[0].decode()
    now = runtime.services.clock.now()
    assert resolve(store, token, now) is not None
    response = signed_in.post(f"/admin/t/example.test/isolated/{message_id}/revoke",
                              recipient="alice@example.test")
    assert response.status_code == 303
    assert resolve(store, token, now) is None
    assert signed_in.get(f"/m/{token}").status_code == 404
    assert [link.recipient for link in store.links(message_id)] == ["bob@example.test"]
    entry = admin_store(runtime).entries("example.test")[0]
    assert (entry.action, entry.target, entry.detail) == ("isolation.revoke", message_id, "alice@example.test")
    again = signed_in.post(f"/admin/t/example.test/isolated/{message_id}/revoke",
                           recipient="alice@example.test")
    assert again.status_code == 404


# --- recipients -----------------------------------------------------------------------------------------

def test_recipient_search_edit_and_spam_toggle(signed_in: Console, runtime: Runtime) -> None:
    page = signed_in.get("/admin/t/example.test/recipients", params={"q": "alice"})
    assert "alice@example.test" in page.text and "bob@example.test" not in page.text
    response = signed_in.post("/admin/t/example.test/recipients/alice%40example.test",
                              name="Alice <b>Ex</b>", organisation="Example KK", department="経理部",
                              title="課長", memo="line one\nline two", spam_filter="1")
    assert response.status_code == 200
    assert "&lt;b&gt;" in response.text
    alice = runtime.services.directory.recipient("alice@example.test")
    assert alice is not None
    assert (alice.name, alice.department, alice.title, alice.memo) == (
        "Alice <b>Ex</b>", "経理部", "課長", "line one\nline two")
    entry = admin_store(runtime).entries("example.test")[0]
    assert entry.action == "recipient.edit" and entry.target == "alice@example.test"
    assert "department" in entry.detail and "spam_filter" not in entry.detail
    signed_in.post("/admin/t/example.test/recipients/alice%40example.test/spam", spam_filter="0")
    assert not runtime.services.directory.recipient("alice@example.test").spam_filter  # type: ignore[union-attr]
    assert actions(runtime, "example.test")[0] == "recipient.spam"


def test_csv_import_dry_run_shows_errors_by_line_then_applies(signed_in: Console, runtime: Runtime) -> None:
    bad = "address,name\nalice@example.test,Alice Renamed\nnot-an-address,Nobody\ndave@example.test,Dave\n"
    response = signed_in.client.post(
        "/admin/t/example.test/import", data={"csrf": signed_in.csrf, "step": "dry-run"},
        files={"file": ("users.csv", bad.encode("cp932"), "text/csv")})
    assert response.status_code == 422
    assert "line 3" in response.text and "not-an-address" in response.text
    assert runtime.services.directory.recipient("dave@example.test") is None
    good = "address,name\nalice@example.test,アリス\ndave@example.test,Dave\n"
    response = signed_in.client.post(
        "/admin/t/example.test/import", data={"csrf": signed_in.csrf, "step": "dry-run", "replace": "1"},
        files={"file": ("users.csv", good.encode("cp932"), "text/csv")})
    assert response.status_code == 200
    counts = dict(re.findall(r'<dd class="(added|changed|removed|unchanged)">(\d+)</dd>', response.text))
    assert counts == {"added": "1", "changed": "1", "removed": "1", "unchanged": "0"}
    assert runtime.services.directory.recipient("dave@example.test") is None  # a dry run changes nothing
    assert "recipients.import" not in actions(runtime, "example.test")
    text = re.search(r'<textarea name="csv_text" hidden>(.*?)</textarea>', response.text, re.S)
    assert text is not None and "アリス" in text.group(1)
    applied = signed_in.client.post("/admin/t/example.test/import", data={
        "csrf": signed_in.csrf, "step": "apply", "replace": "1", "csv_text": good})
    assert applied.status_code == 200
    directory = runtime.services.directory
    assert directory.recipient("dave@example.test") is not None
    assert directory.recipient("alice@example.test").name == "アリス"  # type: ignore[union-attr]
    assert directory.recipient("bob@example.test") is None
    assert directory.recipient("carol@other.test") is not None  # another tenant is untouched
    entry = admin_store(runtime).entries("example.test")[0]
    assert entry.action == "recipients.import" and entry.detail == "1 added, 1 changed, 1 removed"


def test_a_large_import_is_checked_then_applied(signed_in: Console, runtime: Runtime) -> None:
    rows = "".join(f"user{i:05d}@example.test,利用者 {i},株式会社サンプル,営業部,担当,memo {i},on\n"
                   for i in range(15_000))
    assert len(rows.encode("utf-8")) > 1_300_000  # beyond a form field's default 1 MB limit
    checked = signed_in.client.post(
        "/admin/t/example.test/import", data={"csrf": signed_in.csrf, "step": "dry-run"},
        files={"file": ("users.csv", rows.encode("cp932"), "text/csv")})
    assert checked.status_code == 200
    assert '<dd class="added">15000</dd>' in checked.text
    applied = signed_in.client.post("/admin/t/example.test/import", data={
        "csrf": signed_in.csrf, "step": "apply", "csv_text": rows})
    assert applied.status_code == 200, applied.text[:500]
    assert runtime.services.directory.recipient("user14999@example.test") is not None


def test_an_oversized_upload_is_refused(signed_in: Console, runtime: Runtime) -> None:
    from mailmoat_web.admin.recipients import MAX_CSV_BYTES

    response = signed_in.client.post(
        "/admin/t/example.test/import", data={"csrf": signed_in.csrf, "step": "apply"},
        files={"file": ("users.csv", b"a" * (MAX_CSV_BYTES + 1), "text/csv")})
    assert response.status_code == 413
    assert "recipients.import" not in actions(runtime, "example.test")


def test_export_is_audited_and_in_the_asked_encoding(signed_in: Console, runtime: Runtime) -> None:
    response = signed_in.post("/admin/t/example.test/export", encoding="cp932")
    assert response.status_code == 200
    text = response.content.decode("cp932")
    assert "alice@example.test" in text and "carol" not in text
    assert actions(runtime, "example.test")[0] == "recipients.export"


# --- tenant policy --------------------------------------------------------------------------------------

POLICY = {"isolation": "risky", "spam_action": "tag", "retention_days": "30", "allowed_senders": "",
          "blocked_senders": ""}


def test_isolation_all_applies_to_the_next_message_and_survives_a_restart(signed_in: Console,
                                                                         runtime: Runtime) -> None:
    attachment = (("notes.txt", b"plain harmless text\n", "text/plain"),)
    before = receive(runtime, mail(subject="before", attachments=attachment), ["alice@example.test"])
    assert [a["action"] for a in runtime.services.log.get(before).report["attachments"]] == ["keep"]  # type: ignore[union-attr,index]
    response = signed_in.post("/admin/t/example.test/policy", **{**POLICY, "isolation": "all"})
    assert response.status_code == 200 and 'role="status"' in response.text
    after = receive(runtime, mail(subject="after", attachments=attachment), ["alice@example.test"])
    assert [a["action"] for a in runtime.services.log.get(after).report["attachments"]] == ["isolate"]  # type: ignore[union-attr,index]
    entry = admin_store(runtime).entries("example.test")[0]
    assert (entry.action, entry.detail) == ("policy.update", "isolation")
    assert runtime.services.config.tenant("other.test").isolation == "risky"
    # A new process on the same data directory starts with the saved policy over the TOML.
    restarted = bootstrap(runtime.settings)
    assert restarted.services.config.tenant("example.test").isolation == "all"
    assert restarted.services.config.tenant("other.test").isolation == "risky"


def test_plain_zip_as_archive_type_applies_to_the_next_message(signed_in: Console, runtime: Runtime) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", "plain text\n")
    attachment = (("notes.zip", buf.getvalue(), "application/zip"),)

    def action(subject: str) -> str:
        message_id = receive(runtime, mail(subject=subject, attachments=attachment), ["alice@example.test"])
        return str(runtime.services.log.get(message_id).report["attachments"][0]["action"])  # type: ignore[union-attr,index]

    assert action("zip before") == "keep"
    assert signed_in.post("/admin/t/example.test/policy", **{**POLICY, "zip_is_archive_type": "1"}
                          ).status_code == 200
    assert action("zip after") == "isolate"


def test_policy_fields_and_rules_are_saved_validated_and_shown(signed_in: Console, runtime: Runtime) -> None:
    form = {**POLICY, "zip_is_archive_type": "1", "defang_all_links": "1", "html_to_text": "1",
            "spam_action": "quarantine", "retention_days": "14",
            "allowed_senders": "partner.example\n@trusted.example", "blocked_senders": "spam@bad.example",
            "rule-0-order": "2", "rule-0-name": "big from abroad", "rule-0-sender": "",
            "rule-0-min_size": "1000000", "rule-0-max_size": "", "rule-0-countries": "cn ru",
            "rule-0-action": "isolate",
            "rule-1-order": "1", "rule-1-name": "partner pdf", "rule-1-sender": "@partner.example",
            "rule-1-min_size": "", "rule-1-max_size": "", "rule-1-countries": "",
            "rule-1-action": "convert-pdf"}
    response = signed_in.post("/admin/t/example.test/policy", **form)
    assert response.status_code == 200, response.text
    tenant = runtime.services.config.tenant("example.test")
    assert (tenant.zip_is_archive_type, tenant.defang_all_links, tenant.html_to_text) == (True, True, True)
    assert (tenant.spam_action, tenant.retention_days) == ("quarantine", 14)
    assert tenant.allowed_senders == ["partner.example", "@trusted.example"]
    assert [(r.name, r.action) for r in tenant.rules] == [("partner pdf", "convert-pdf"),
                                                          ("big from abroad", "isolate")]
    assert tenant.rules[1].countries == ["CN", "RU"] and tenant.rules[1].min_size == 1_000_000
    shown = signed_in.get("/admin/t/example.test/policy").text
    assert 'value="big from abroad"' in shown and "@trusted.example" in shown
    # Removing a rule by its checkbox.
    removed = signed_in.post("/admin/t/example.test/policy", **{**form, "rule-0-remove": "1"})
    assert removed.status_code == 200
    assert [r.name for r in runtime.services.config.tenant("example.test").rules] == ["partner pdf"]


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("retention_days", "0", "retention_days"),
    ("retention_days", "many", "retention_days"),
    ("isolation", "everything", "isolation"),
    ("spam_action", "bounce", "spam_action"),
    ("blocked_senders", "not a sender!", "not an address or domain"),
    ("rule-0-countries", "Japan", "two-letter country"),
    ("rule-0-action", "format-c", "action"),
    ("rule-0-min_size", "-5", "negative"),
])
def test_invalid_policy_is_refused_with_the_reason_and_changes_nothing(
        signed_in: Console, runtime: Runtime, field: str, value: str, problem: str) -> None:
    form = {**POLICY, "rule-0-name": "r", "rule-0-sender": "", "rule-0-countries": "",
            "rule-0-min_size": "", "rule-0-max_size": "", "rule-0-action": "isolate", field: value}
    response = signed_in.post("/admin/t/example.test/policy", **form)
    assert response.status_code == 422
    assert problem in response.text
    assert runtime.services.config.tenant("example.test").rules == []
    assert "policy.update" not in actions(runtime, "example.test")
    assert bootstrap(runtime.settings).services.config.tenant("example.test").rules == []


def test_english_pages_for_an_english_browser(signed_in: Console) -> None:
    page = signed_in.get(TRACE, headers={"Accept-Language": "en"})
    assert "Message trace" in page.text and "メッセージ追跡" not in page.text
    assert "メッセージ追跡" in signed_in.get(TRACE, headers={"Accept-Language": "ja"}).text


def test_admin_of_other_tenant_signs_in_to_their_own(console: Console) -> None:
    assert console.login("admin@other.test", OTHER_PASSWORD).status_code == 401
    assert console.login("admin@other.test").status_code == 303
    assert console.get("/admin/").headers["location"] == "/admin/t/other.test/trace"
    assert console.get(TRACE).status_code == 404


def test_account_scopes(runtime: Runtime) -> None:
    add_admin(runtime, "second@example.test", "example.test")
    emails = [a.email for a in admin_store(runtime).accounts()]
    assert emails == ["admin@example.test", "admin@other.test", "second@example.test"]


# --- hostile input gets an answer, never a 500 ------------------------------------------------------------

@pytest.mark.parametrize("params", [
    {"subject": "\x00\x01' OR '1'='1"}, {"sender": "%" * 200}, {"page": "-5"}, {"page": "abc"},
    {"page": "99999999999999999999"}, {"since": "9999-99-99"}, {"until": "２０２６-01-01"},
    {"symbol": "<script>"}, {"verdict": "'; DROP TABLE messages; --"}, {"recipient": "\\"},
])
def test_trace_survives_hostile_parameters(signed_in: Console, params: dict[str, str]) -> None:
    response = signed_in.get(TRACE, params=params)
    assert response.status_code == 200
    assert "<script>" not in response.text


def test_hostile_paths_and_uploads(signed_in: Console, runtime: Runtime) -> None:
    base = "/admin/t/example.test"
    for path in (f"{base}/messages/..%2F..%2Fetc%2Fpasswd", f"{base}/messages/%00",
                 f"{base}/recipients/%00", f"{base}/recipients/" + "a" * 5000):
        assert signed_in.get(path).status_code == 404
    assert signed_in.get(f"{TRACE}?subject=%FF%FE&since=%C0%AF").status_code == 200  # not UTF-8
    garbage = bytes(range(256)) * 64
    response = signed_in.client.post(f"{base}/import", data={"csrf": signed_in.csrf, "step": "dry-run"},
                                     files={"file": ("x.csv", garbage, "application/octet-stream")})
    assert response.status_code == 422
    assert signed_in.get(TRACE).status_code == 200
