"""Keep-mail HTML rendering (issue 9): nh3 allow-list, defanged links, images held back, own CSP."""

from __future__ import annotations

import base64

import lxml.html
import pytest

from mailmoat.services.keepmail_view import PLACEHOLDER, sanitise_html
from mailmoat_web.keepmail import body_csp
from tests.unit.keepmail.helpers import REMOTE, SCRIPTED_HTML

PORTAL = "http://127.0.0.1:8080"


def tree(html: str) -> lxml.html.HtmlElement:
    return lxml.html.fragment_fromstring(html, create_parent="div")


def test_script_handlers_styles_frames_and_forms_are_gone() -> None:
    clean, blocked = sanitise_html(SCRIPTED_HTML, images=False, portal_url=PORTAL)
    root = tree(clean)
    for tag in ("script", "style", "iframe", "form", "input", "svg"):
        assert root.findall(f".//{tag}") == [], tag
    assert "pwned" not in clean and "alert" not in clean
    assert not [a for el in root.iter() for a in el.attrib if a.lower().startswith("on")]
    assert "Hello" in root.text_content() and root.findall(".//b")
    assert blocked == 1


def test_remote_images_are_replaced_until_asked_for() -> None:
    clean, _ = sanitise_html(SCRIPTED_HTML, images=False, portal_url=PORTAL)
    assert REMOTE not in clean
    assert [img.get("src") for img in tree(clean).iter("img")] == [PLACEHOLDER]
    shown, _ = sanitise_html(SCRIPTED_HTML, images=True, portal_url=PORTAL)
    assert [img.get("src") for img in tree(shown).iter("img")] == [f"https://{REMOTE}/pixel.png"]
    assert "onerror" not in shown


@pytest.mark.parametrize("src", ["javascript:alert(1)", "data:text/html,<script>x</script>",
                                 "vbscript:x", "//evil.example/a.png", "file:///etc/passwd"])
def test_only_http_images_load_even_when_allowed(src: str) -> None:
    clean, _ = sanitise_html(f'<img src="{src}">', images=True, portal_url=PORTAL)
    assert [img.get("src") for img in tree(clean).iter("img")] in ([PLACEHOLDER], [None], [])
    assert "script" not in clean and "evil" not in clean and "passwd" not in clean


def test_links_are_neutralised_but_our_portal_link_stays() -> None:
    html = ('<p><a href="https://phish.example/login">sign in</a> '
            f'<a href="{PORTAL}/m/AbC_123">files</a> '
            '<a href="http://127.0.0.1:8080.evil.example/m/x">fake</a></p>')
    clean, _ = sanitise_html(html, images=False, portal_url=PORTAL)
    anchors = list(tree(clean).iter("a"))
    assert [a.get("href") for a in anchors] == [None, f"{PORTAL}/m/AbC_123", None]
    assert anchors[1].get("target") == "_blank" and "noopener" in anchors[1].get("rel")
    assert "hxxps://phish[.]example/login" in clean


def test_inline_cid_images_become_data_uris_but_never_svg() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    inline = {"logo@x": f"data:image/png;base64,{png}"}
    clean, _ = sanitise_html('<img src="cid:logo@x"><img src="cid:other@x">', images=False,
                             portal_url=PORTAL, inline=inline)
    assert [img.get("src") for img in tree(clean).iter("img")] == [inline["logo@x"], PLACEHOLDER]


def test_style_attributes_cannot_fetch() -> None:
    clean, _ = sanitise_html(
        f'<p style="color: red; background-image: url(https://{REMOTE}/x); position: fixed">x</p>',
        images=False, portal_url=PORTAL)
    assert REMOTE not in clean and "position" not in clean and "color:red" in clean.replace(" ", "")


def test_hostile_markup_gets_a_rendering_not_a_crash() -> None:
    for html in ["", "<", "\x00\x01<p>", "<a href='" + "x" * 100000, "<table>" * 5000,
                 "<![CDATA[<script>alert(1)</script>]]>", "<math><mi xlink:href='javascript:x'>"]:
        clean, _ = sanitise_html(html, images=True, portal_url=PORTAL)
        assert "<script" not in clean.lower() and "javascript:" not in clean


def test_the_framed_body_policy_allows_no_script() -> None:
    for images in (False, True):
        csp = body_csp(images)
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "sandbox" in csp and "allow-scripts" not in csp and "allow-same-origin" not in csp
    assert "https:" not in body_csp(False) and "https:" in body_csp(True)
