"""The console dashboard in a real browser (headless Debian chromium via Playwright), from a
seeded message log: the SVG charts draw under the page's CSP (no violation reported), the period
switch works, Japanese and English; screenshots go to $MAILMOAT_SCREENSHOTS (docs/ for the README:
docs/dashboard-ja.png, docs/dashboard-en.png)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailmoat.admin.stats import window
from mailmoat.ports import MessageLog, MessageRecord
from mailmoat.runtime import Runtime
from tests.conftest import free_port
from tests.e2e.browser import ARGS, CHROMIUM, require_chromium, serving
from tests.e2e.test_admin_browser import sign_in
from tests.unit.admin.helpers import add_admin, make_runtime

pytestmark = [pytest.mark.slow]

NOW = datetime.now(UTC).replace(microsecond=0)
SINCE = window(7, NOW)[0]  # the 7-day period starts at midnight UTC six days ago
DOMAINS = ("partner.co.jp", "supplier.example", "newsletter.example", "bank.example", "unknown.example")
COUNTRIES = (["JP"], ["JP", "US"], ["US"], ["JP", "SG"], ["CN"])
XSS = "<script>alert('dashboard')</script>"
OUTCOMES = [("delivered", "deliver")] * 6 + [("quarantined", "quarantine"), ("dropped", "drop"),
                                             ("held", "held")]


def seed_week(log: MessageLog) -> int:
    """A believable week for example.test (and a little for other.test); returns example.test's
    count over the last 7 days."""
    count = 0
    for day in range(7):
        for n in range(6 + (day * 5) % 9):
            i = day * 100 + n
            tenant = "other.test" if n == 0 else "example.test"
            at = NOW - timedelta(days=day, hours=(n * 3) % 23, minutes=n)
            state, disposition = OUTCOMES[i % len(OUTCOMES)]
            attachments: list[dict[str, Any]] = []
            if i % 3 == 0:
                attachments.append({"verdict": "safe", "action": "keep", "symbols": []})
            if i % 7 == 0:
                attachments.append({"verdict": "risky", "action": "isolate", "symbols": ["MACRO_OFFICE"]})
            if i % 11 == 0:
                attachments.append({"verdict": "encrypted", "action": "isolate",
                                    "symbols": ["ENCRYPTED_ARCHIVE"]})
            symbols = ["SPF_PASS"] if i % 2 else ["SPF_FAIL", "DMARC_FAIL"]
            if day == 0 and n == 1:
                symbols.append(XSS)
            report = {"from": f"Sender <s{n}@{DOMAINS[i % len(DOMAINS)]}>", "attachments": attachments,
                      "findings": [{"symbol": s, "target": "message"} for s in symbols],
                      "route": [{"ip": "203.0.113.5", "country": c} for c in COUNTRIES[i % 5]]}
            log.accept(MessageRecord(id=f"{tenant}-{i}", received_at=at, state="accepted", tenant=tenant,
                                     mail_from=f"bounce@{DOMAINS[i % 5]}", rcpt_to=[f"alice@{tenant}"]))
            log.update(f"{tenant}-{i}", state=state, disposition=disposition, report=report)
            count += tenant == "example.test" and at >= SINCE
    return count


class FixedClock:
    def now(self) -> datetime:
        return NOW


@dataclass
class Served:
    base: str
    runtime: Runtime
    week: int


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    require_chromium()
    from mailmoat_web.app import create_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runtime = make_runtime(tmp_path, portal_base_url=base)
    runtime.services.clock = FixedClock()
    add_admin(runtime, "admin@example.test", "example.test")
    week = seed_week(runtime.services.log)
    with serving(create_app(runtime, sweep_every=None), port):
        yield Served(base, runtime, week)


def test_dashboard_in_chromium(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base = served.base
    shots = Path(os.environ.get("MAILMOAT_SCREENSHOTS", tmp_path))
    errors: list[str] = []
    dialogs: list[str] = []
    missing: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context(locale="ja-JP", viewport={"width": 1200, "height": 900})
            page = context.new_page()
            # A CSP violation (inline style or script) is reported on the console as an error.
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
            sign_in(page, base, "admin@example.test")
            page.wait_for_url(f"{base}/admin/t/example.test/trace")

            page.click("nav.admin-nav >> text=ダッシュボード")
            page.wait_for_url(f"{base}/admin/t/example.test/dashboard")
            assert page.locator("h1").inner_text() == "ダッシュボード"
            assert page.locator("dd.total").inner_text() == str(served.week)
            assert page.locator("svg.chart").count() == 6
            bars = page.locator("#per-bucket svg rect.bar")
            assert bars.count() == 7
            box = page.locator("#per-bucket svg").bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            assert page.locator("#dispositions text.label").first.text_content() == "配送"
            assert "partner.co.jp" in page.locator("#domains").text_content() or ""
            assert XSS in (page.locator("#symbols").text_content() or "")  # shown as text, never run
            page.screenshot(path=str(shots / "dashboard-ja.png"), full_page=True)

            page.click("nav.dash-periods >> text=過去 24 時間")
            assert page.locator("#per-bucket svg rect.bar").count() == 24
            assert page.locator("nav.dash-periods a[aria-current=page]").inner_text() == "過去 24 時間"
            page.click("nav.dash-periods >> text=過去 30 日")
            assert page.locator("#per-bucket svg rect.bar").count() == 30

            page.click("nav.dash-periods >> text=過去 7 日")
            page.click("a.lang")  # the language switch keeps the page
            assert page.locator("h1").inner_text() == "Dashboard"
            assert page.locator("#dispositions text.label").first.text_content() == "Delivered"
            assert "Route countries" in page.locator("#countries h2").inner_text()
            page.screenshot(path=str(shots / "dashboard-en.png"), full_page=True)
        finally:
            browser.close()
    assert dialogs == []
    assert not [e for e in errors if "Content Security Policy" in e]
    # The stylesheets load; the only miss is the browser's own favicon request.
    assert {url.removeprefix(base) for url in missing} <= {"/favicon.ico"}
