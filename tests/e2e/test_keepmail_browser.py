"""Keep-mail acceptance (issue 9) in headless Debian chromium via Playwright: a recipient signs in,
reads a message whose HTML carries a script and a remote image (neither runs nor loads), shows
images on request, and opens the isolated file's portal page."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailmoat.keepmail import set_password
from tests.conftest import free_port
from tests.e2e.browser import ARGS, CHROMIUM, require_chromium, serving
from tests.unit.keepmail.helpers import PASSWORD, deliver, make_runtime

REMOTE = "tracker.remote.example"
HOSTILE_HTML = f"""<html><head><script>document.title = 'pwned';
fetch('https://{REMOTE}/script-ran');</script></head><body>
<h2>Quarterly figures</h2>
<p onmouseover="document.title='pwned'">Dear Alice, <a href="https://phish.example/login">sign in here</a>.</p>
<img id="logo" src="https://{REMOTE}/pixel.png" alt="remote logo" onload="document.title='pwned'">
<img src=x onerror="alert('xss')">
</body></html>"""

pytestmark = [pytest.mark.slow]


def hostile_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Sender <sender@sender.example>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "四半期の数字 / quarterly figures"
    msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0900"
    msg.set_content("Dear Alice, see the figures.\n")
    msg.add_alternative(HOSTILE_HTML, subtype="html")
    msg.add_attachment(b"MZ\x90\x00" + b"\x00" * 64, maintype="application", subtype="octet-stream",
                       filename="figures.exe")
    return msg.as_bytes()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    require_chromium()
    from mailmoat_web.app import create_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runtime = make_runtime(tmp_path)
    runtime.services.settings = runtime.services.settings.model_copy(update={"portal_base_url": base})
    runtime.settings = runtime.services.settings
    message_id, ctx = deliver(runtime, hostile_message(), rcpts=["alice@example.test"])
    assert "isolate" in ctx.actions
    set_password(runtime.services.keepmail, "alice@example.test", PASSWORD)
    with serving(create_app(runtime, sweep_every=None), port):
        yield base, message_id


def test_keepmail_in_chromium(served: tuple[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import Route, sync_playwright

    base, message_id = served
    outside: list[str] = []
    dialogs: list[str] = []

    def refuse_outside(route: Route) -> None:
        outside.append(route.request.url)  # recorded, and never allowed to reach the internet
        route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context(locale="en-US")
            context.route(re.compile(r"^(?!http://127\.0\.0\.1:\d+/).*"), refuse_outside)
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            page.goto(f"{base}/k?lang=en")
            page.locator("form.signin input[name=address]").fill("alice@example.test")
            page.locator("form.signin input[name=password]").fill("not the password")
            page.locator("form.signin button").click()
            assert "Sign-in failed" in page.locator(".error").inner_text()
            page.locator("form.signin input[name=address]").fill("alice@example.test")
            page.locator("form.signin input[name=password]").fill(PASSWORD)
            page.locator("form.signin button").click()
            page.wait_for_url(f"{base}/k/inbox")
            row = page.locator("tr.kept", has_text="quarterly figures")
            assert row.locator(".badge").inner_text() == "Delivered"

            row.locator("a").click()
            page.wait_for_url(f"{base}/k/m/{message_id}")
            frame_element = page.locator("iframe.mail-body")
            assert frame_element.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
            frame = page.frame_locator("iframe.mail-body")
            assert "Quarterly figures" in frame.locator("h2").inner_text()
            assert "hxxps://phish[.]example/login" in frame.locator("p").inner_text()
            # The only live link left is the isolate notice's link to alice's own portal page.
            hrefs = frame.locator("a[href]").evaluate_all("links => links.map(a => a.href)")
            assert hrefs and all(h.startswith(f"{base}/m/") for h in hrefs)
            frame.locator("p").hover()  # the stripped onmouseover would fire here
            page.wait_for_timeout(500)
            body = next(f for f in page.frames if f.url.endswith("/body"))
            assert body.title() != "pwned" and page.title() != "pwned"
            assert frame.locator("img[alt='remote logo']").get_attribute("src").startswith("data:image/svg+xml")
            assert "Remote images are not shown (1)" in page.locator("p.images").inner_text()
            assert not [u for u in outside if REMOTE in u]  # neither the image nor the script's fetch
            shots = Path(os.environ.get("MAILMOAT_SCREENSHOTS", tmp_path))
            page.screenshot(path=str(shots / "keepmail-en.png"), full_page=True)

            # Asked for: the frame is re-rendered with the image (still through nh3, http(s) only).
            page.locator("a.show-images").click()
            page.wait_for_url(f"{base}/k/m/{message_id}?images=1")
            page.wait_for_timeout(500)
            assert f"https://{REMOTE}/pixel.png" in outside  # requested now (and aborted by the test)
            assert f"https://{REMOTE}/script-ran" not in outside
            assert page.frame_locator("iframe.mail-body").locator("img[alt='remote logo']").get_attribute("src") == \
                f"https://{REMOTE}/pixel.png"

            # The isolated file: the recipient's own portal page, as linked from the delivered copy.
            page.locator("a.portal-link").click()
            page.wait_for_url(re.compile(re.escape(base) + r"/m/[A-Za-z0-9_-]+"))
            assert page.locator("article", has_text="figures.exe").count() == 1
        finally:
            browser.close()
    assert dialogs == []
