"""Link neutralising cannot be walked around (issue 19, item 6): only the portal's exact message
route stays live. A browser resolves `%2e%2e` (and `.%2e`, `%2e.`) as `..`, so
`<portal>/m/%2e%2e/admin/login` in a spoofed mail used to keep its href (and, in keep-mail,
target=_blank, which leaves the sandboxed frame)."""

from __future__ import annotations

import email
import email.message
import email.policy
from pathlib import Path

import lxml.html
import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.config import load_config
from mailmoat.context import Envelope
from mailmoat.services.keepmail_view import sanitise_html
from tests.conftest import DEMO_CONFIG, make_settings

PORTAL = "https://portal.example.test"
TOKEN = "Q2hvb3NlIGEgdG9rZW4gbGlrZSBvdXJz"  # the shape isolation.new_token() gives

BYPASSES = [
    f"{PORTAL}/m/%2e%2e/admin/login",
    f"{PORTAL}/m/%2E%2E/admin/login",
    f"{PORTAL}/m/.%2e/admin/login",
    f"{PORTAL}/m/%2e./admin/login",
    f"{PORTAL}/m/..%2fadmin/login",
    f"{PORTAL}/m/%2e%2e%2fadmin%2flogin",
    f"{PORTAL}/m/{TOKEN}/..%2f..%2fadmin",
    f"{PORTAL}/m/{TOKEN}/%2e%2e/%2e%2e/k/",
    f"{PORTAL}/m/..\\admin\\login",
    f"{PORTAL}/m/%252e%252e/admin",
    f"{PORTAL}/m/{TOKEN}?next=/admin",
    f"{PORTAL}/m/{TOKEN}#/admin",
    f"{PORTAL}/m/{TOKEN}/f/1.2/download",  # a real route, but not one a mail needs to keep
]


def _links(html: str) -> dict[str, str | None]:
    root = lxml.html.fromstring(html)
    # A defanged anchor's text gains the neutralised URL in front: key by its last word.
    return {a.text_content().split()[-1]: a.get("href") for a in root.iter("a")}


def _spoofed_html_mail() -> bytes:
    anchors = "".join(f'<p><a href="{url}" target="_blank">link{n}</a></p>' for n, url in enumerate(BYPASSES))
    anchors += f'<p><a href="{PORTAL}/m/{TOKEN}">ours</a></p>'
    return ("From: Boss <boss@bank.example>\r\nTo: alice@example.test\r\nSubject: urgent\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body>{anchors}</body></html>\r\n").encode()


@pytest.fixture
def defang_everything(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(DEMO_CONFIG.read_text(encoding="utf-8").replace(
        "defang_all_links = false", "defang_all_links = true"), encoding="utf-8")
    return config


def test_encoded_dot_segments_lose_their_href_in_the_delivered_mail(tmp_path: Path,
                                                                  defang_everything: Path) -> None:
    settings = make_settings(tmp_path, config=defang_everything, portal_base_url=PORTAL)
    runtime = bootstrap(settings, config=load_config(defang_everything))
    ctx = runtime.analyse(_spoofed_html_mail(), Envelope(rcpt_to=["alice@example.test"]),
                          stages=("authenticate", "scan", "isolate", "rewrite"))
    assert "defang" in ctx.actions
    assert ctx.output is not None
    delivered = email.message_from_bytes(ctx.output, policy=email.policy.default)
    body = delivered.get_body(preferencelist=("html",))
    assert isinstance(body, email.message.EmailMessage)
    html = body.get_content()
    links = _links(html)
    assert len(links) == len(BYPASSES) + 1
    live = {text: href for text, href in links.items() if text.startswith("link") and href}
    assert not live, f"bypass links kept live: {live}"
    assert links["ours"] == f"{PORTAL}/m/{TOKEN}"  # the portal's message page itself stays


@pytest.mark.parametrize("url", BYPASSES)
def test_keep_mail_frame_keeps_no_bypass_link(url: str) -> None:
    clean, _ = sanitise_html(f'<a href="{url}" target="_blank">x</a>', images=False, portal_url=PORTAL)
    anchor = next(lxml.html.fromstring(f"<div>{clean}</div>").iter("a"))
    assert anchor.get("href") is None, clean
    assert anchor.get("target") is None or anchor.get("href") is None


def test_keep_mail_frame_keeps_the_portal_message_link() -> None:
    clean, _ = sanitise_html(f'<a href="{PORTAL}/m/{TOKEN}">x</a>', images=False, portal_url=PORTAL)
    anchor = next(lxml.html.fromstring(f"<div>{clean}</div>").iter("a"))
    assert anchor.get("href") == f"{PORTAL}/m/{TOKEN}"
