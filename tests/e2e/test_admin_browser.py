"""The admin console in a real browser (headless Debian chromium via Playwright): sign in, import
a CSV with a bad row, trace a delivered message, another tenant's admin locked out, isolation
switched to `all` for the next message."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailmoat.runtime import Runtime
from tests.conftest import free_port
from tests.e2e.browser import ARGS, CHROMIUM, require_chromium, serving
from tests.unit.admin.helpers import PASSWORD, Geo, add_admin, mail, make_runtime, receive

pytestmark = [pytest.mark.slow]


@dataclass
class Served:
    base: str
    runtime: Runtime
    delivered: str  # a message delivered to alice (tenant example.test)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    require_chromium()
    from mailmoat_web.app import create_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runtime = make_runtime(tmp_path, portal_base_url=base)
    runtime.services.geoip = Geo()
    add_admin(runtime, "admin@example.test", "example.test")
    add_admin(runtime, "admin@other.test", "other.test")
    raw = (b"Received: from relay.sender.example (relay.sender.example [198.51.100.7]) by "
           b"mx.sender.example with ESMTP id r1; Fri, 27 Nov 2026 10:00:00 +0900\r\n"
           + mail(subject="四半期レポート Q3"))
    delivered = receive(runtime, raw, ["alice@example.test"])
    receive(runtime, mail(to="carol@other.test", subject="carol only"), ["carol@other.test"])
    with serving(create_app(runtime, sweep_every=None), port):
        yield Served(base, runtime, delivered)


def sign_in(page: object, base: str, email: str) -> None:
    page.goto(f"{base}/admin/")  # type: ignore[attr-defined]
    page.fill("input[name=email]", email)  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("form.stacked button[type=submit]")  # type: ignore[attr-defined]


def test_admin_console_in_chromium(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, runtime = served.base, served.runtime
    shots = Path(os.environ.get("MAILMOAT_SCREENSHOTS", tmp_path))
    dialogs: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context(locale="ja-JP", viewport={"width": 1100, "height": 760})
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # Sign in: lands on the tenant's message trace.
            sign_in(page, base, "admin@example.test")
            page.wait_for_url(f"{base}/admin/t/example.test/trace")
            assert page.locator("h1").inner_text() == "メッセージ追跡"
            assert "carol only" not in page.content()

            # CSV import: the dry run shows the bad row by its line, nothing is applied.
            page.click("nav.admin-nav >> text=受信者")
            page.click("text=CSV をインポート")
            bad = "address,name\ndave@example.test,Dave\nnot-an-address,Nobody\n"
            page.set_input_files("input[type=file]", {"name": "users.csv", "mimeType": "text/csv",
                                                      "buffer": bad.encode("utf-8")})
            page.click("form.upload button")
            errors_list = page.locator("ul.import-errors li")
            assert errors_list.count() == 1
            assert "line 3" in errors_list.inner_text() and "not-an-address" in errors_list.inner_text()
            assert runtime.services.directory.recipient("dave@example.test") is None
            good = "address,name,organisation\ndave@example.test,Dave,Example KK\nalice@example.test,アリス,\n"
            page.set_input_files("input[type=file]", {"name": "users.csv", "mimeType": "text/csv",
                                                      "buffer": good.encode("cp932")})
            page.click("form.upload button")
            assert page.locator("dd.added").inner_text() == "1"
            assert page.locator("dd.changed").inner_text() == "1"
            page.screenshot(path=str(shots / "admin-import.png"))
            page.click("form.apply button")
            assert "反映しました" in page.locator(".import-result").inner_text()
            assert runtime.services.directory.recipient("dave@example.test") is not None
            assert runtime.services.directory.recipient("alice@example.test").name == "アリス"  # type: ignore[union-attr]

            # Trace: find the delivered message, open its detail.
            page.click("nav.admin-nav >> text=メッセージ追跡")
            page.fill("input[name=subject]", "四半期")
            page.click("form.search button")
            rows = page.locator("table.trace tbody tr")
            assert rows.count() == 1
            assert "配送済み" in rows.first.inner_text()
            page.screenshot(path=str(shots / "admin-trace.png"))
            rows.first.locator("a").click()
            page.wait_for_url(f"{base}/admin/t/example.test/messages/{served.delivered}")
            assert "四半期レポート Q3" in page.locator("dd.subject").inner_text()
            hops = page.locator("ol.hops").inner_text()
            assert "\U0001F1EF\U0001F1F5" in hops and "\U0001F1FA\U0001F1F8" in hops  # 🇯🇵 🇺🇸
            assert "delivered" in page.locator("section.deliveries").inner_text()
            assert page.locator("section.stages tbody tr").count() >= 5
            page.screenshot(path=str(shots / "admin-message.png"), full_page=True)

            # Isolation to "all": the next message's harmless attachment goes to the portal.
            page.click("nav.admin-nav >> text=ポリシー")
            page.check("input[name=isolation][value=all]")
            page.click("form.policy > button[type=submit]")
            assert page.locator("p.ok").is_visible()
            assert page.evaluate("document.cookie") == ""  # session, CSRF and language are HttpOnly
            detail_url = page.url.replace("/policy", f"/messages/{served.delivered}")

            # The other tenant's admin: that message is not there, under either tenant's URL.
            other = browser.new_context(locale="en-US").new_page()
            other.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            sign_in(other, base, "admin@other.test")
            other.wait_for_url(f"{base}/admin/t/other.test/trace")
            assert "carol only" in other.content() and "四半期" not in other.content()
            assert other.goto(detail_url).status == 404  # type: ignore[union-attr]
            assert other.goto(f"{base}/admin/t/other.test/messages/{served.delivered}").status == 404  # type: ignore[union-attr]
            other.context.close()
        finally:
            browser.close()
    after = receive(runtime, mail(subject="after the change", attachments=(
        ("notes.txt", b"harmless text\n", "text/plain"),)), ["alice@example.test"])
    report = runtime.services.log.get(after).report  # type: ignore[union-attr]
    assert [a["action"] for a in report["attachments"]] == ["isolate"]  # type: ignore[index]
    assert dialogs == []
    assert not [e for e in errors if "Content Security Policy" in e]
