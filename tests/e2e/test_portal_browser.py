"""The portal in a real browser (issue 5 acceptance 1, 3, 4): headless Debian chromium via Playwright."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.browser import ARGS, CHROMIUM, require_chromium, serving
from tests.unit.isolation.builders import PASSWORD, XSS, aes_zip, analyse, clean_pdf, make_runtime, message

MEMBERS = {"report.txt": b"member bytes\n", "figures.csv": b"a,b\n1,2\n"}

pytestmark = [pytest.mark.slow]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The portal under uvicorn on loopback, and the link from alice's notice."""
    require_chromium()
    from mailmoat_web.app import create_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runtime = make_runtime(tmp_path / "var", portal_base_url=base)
    runtime.services.geoip = _Geo()
    raw = message(("請求書.zip", aes_zip(MEMBERS), "application/zip"),
                  ("clean.pdf", clean_pdf(), "application/pdf"),
                  (XSS, b"MZ\x90\x00", "application/octet-stream"), subject=XSS)
    # A second hop abroad, so the page has flags from two countries and the warning.
    raw = (b"Received: from relay.sender.example (relay.sender.example [198.51.100.7]) by "
           b"mx.sender.example with ESMTP id r1; Fri, 27 Nov 2026 10:00:00 +0900\n" + raw)
    ctx = analyse(runtime, raw)
    notice = message_from_bytes(ctx.outputs["alice@example.test"], policy=policy.default)
    text = next(str(n.get_content()) for n in notice.walk() if n.get_content_type() == "text/plain")
    link = re.findall(re.escape(base) + r"/m/[A-Za-z0-9_-]+", text)[0]
    with serving(create_app(runtime), port):
        yield base, link


class _Geo:
    def country(self, ip: str) -> str | None:
        return {"203.0.113.5": "JP", "198.51.100.7": "US"}.get(ip)


def test_encrypted_zip_in_chromium(served: tuple[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    _base, link = served
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_context(locale="ja-JP", accept_downloads=True).new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(link)
            zip_file = page.locator("article", has_text="請求書.zip")
            assert zip_file.locator(".badge").inner_text() == "暗号化"
            # Markup in the subject and a file name is text, never an element (acceptance 3).
            assert page.locator("dd.subject").inner_text() == XSS
            assert page.locator("article .name", has_text=XSS).count() == 1
            assert page.locator("img").count() == 0
            assert "\U0001F1EF\U0001F1F5" in page.locator("ol.hops").inner_text()  # 🇯🇵
            assert page.locator(".route-warning").is_visible()
            shots = Path(os.environ.get("MAILMOAT_SCREENSHOTS", tmp_path))
            page.screenshot(path=str(shots / "portal-ja.png"), full_page=True)

            zip_file.locator("input[type=password]").fill("wrong")
            zip_file.locator("form.unlock button").click()
            zip_file = page.locator("article", has_text="請求書.zip")
            assert "パスワードが違います" in zip_file.inner_text()
            assert page.locator("li.member").count() == 0

            zip_file.locator("input[type=password]").fill(PASSWORD)
            zip_file.locator("form.unlock button").click()
            members = page.locator("li.member")
            assert members.count() == 2
            assert "内容を再検査しました" in page.locator("article", has_text="請求書.zip").inner_text()
            for i, (name, data) in enumerate(MEMBERS.items()):
                with page.expect_download() as info:
                    members.nth(i).locator("button").click()
                download = info.value
                assert download.suggested_filename == name
                target = tmp_path / f"got-{name}"
                download.save_as(str(target))
                assert target.read_bytes() == data

            # A POST without the form's CSRF value is refused, cookies or not.
            refused = page.request.post(f"{link}/f/2/unlock", form={"password": PASSWORD})
            assert refused.status == 403

            page.goto(f"{link}?lang=en")
            assert page.locator("article", has_text="請求書.zip").locator(".badge").inner_text() == "Encrypted"
            page.screenshot(path=str(shots / "portal-en.png"), full_page=True)
            assert page.evaluate("document.cookie") == ""  # CSRF and language cookies are HttpOnly
        finally:
            browser.close()
    assert dialogs == []
    assert not [e for e in errors if "Content Security Policy" in e]
