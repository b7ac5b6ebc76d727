"""Link neutralising: anchors lose their targets, which are shown defanged; bare URLs are defanged."""

from __future__ import annotations

import re

import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.rewrite.defang import defang_html, defang_text, defang_url, portal_links
from mailmoat.rewrite.htmldoc import parse_html, serialize_html
from tests.unit.rewrite.conftest import RunRewrite
from tests.unit.rewrite.helpers import leaf, message, multipart, no_clickable_url, text_parts


@pytest.mark.parametrize(("url", "shown"), [
    ("https://example.com", "hxxps://example[.]com"),
    ("http://www.example.co.jp/a.b/c?d=e.f#g", "hxxp://www[.]example[.]co[.]jp/a.b/c?d=e.f#g"),
    ("HTTPS://EXAMPLE.COM", "hxxps://EXAMPLE[.]COM"),
    ("ftp://files.example.com/x", "fxp://files[.]example[.]com/x"),
    ("www.example.com/path", "www[.]example[.]com/path"),
    ("javascript:alert(document.cookie)", "javascript:"),
    ("data:text/html;base64,PHNjcmlwdD4=", "data:"),
    ("mailto:a@example.com", "mailto:a@example.com"),
])
def test_defang_url(url: str, shown: str) -> None:
    assert defang_url(url) == shown


@pytest.mark.parametrize(("text", "expected"), [
    ("see https://example.com/x.", "see hxxps://example[.]com/x."),
    ("こちらhttps://example.jp/ログイン。", "こちらhxxps://example[.]jp/ログイン。"),
    ("(http://a.example.com)", "(hxxp://a[.]example[.]com)"),
    ("「https://example.jp」", "「hxxps://example[.]jp」"),
    ("bare www.example.com here", "bare www[.]example[.]com here"),
    ("nothing after http:// here", "nothing after hxxp:// here"),
    ("no links, version 1.2.3", "no links, version 1.2.3"),
])
def test_defang_text(text: str, expected: str) -> None:
    assert defang_text(text) == expected


ATTACK_HTML = """<html><head><base href="https://evil.example/">
<meta http-equiv="refresh" content="0; url=https://evil.example/r"></head><body>
<a href="https://example.com">こちら</a>
<a HREF='javascript:alert(1)'>js</a><a href="data:text/html,x">data</a>
<map><area href="http://area.example.com/" alt="area"></map>
<form action="https://phish.example/post"><button formaction="https://x.example/">b</button></form>
<iframe src="https://frame.example/"></iframe><frameset><frame src="http://f.example/"></frameset>
<svg><a xlink:href="https://svg.example/">svg</a></svg>
<!--[if mso]><a href="https://outlook-only.example/">o</a><![endif]-->
<p>text link https://bare.example.com/x and <b>http</b>s://split.example</p>
</body></html>"""


def test_defang_html_removes_every_navigating_target() -> None:
    doc = parse_html(ATTACK_HTML)
    defang_html(doc.root)
    out = serialize_html(doc)
    assert re.search(r"(?i)\bhref\s*=", out) is None
    assert re.search(r"(?i)\b(action|formaction|src)\s*=", out) is None
    assert "refresh" not in out and "<base" not in out and "outlook-only" not in out
    assert '<a>[hxxps://example[.]com] こちら</a>' in out
    assert "[javascript:] js" in out and "[data:] data" in out
    assert no_clickable_url(lxml.html.document_fromstring(out).text_content())


def test_defang_in_message_text_and_html(run_rewrite: RunRewrite) -> None:
    raw = message(multipart(
        "alternative",
        leaf("text/plain", "ログイン: https://example.com/login\n"),
        leaf("text/html", '<a href="https://example.com/login">こちら</a>'),
    ))
    _, result = run_rewrite(raw, actions=("defang",))
    parts = dict(text_parts(result.data))
    assert "ログイン: hxxps://example[.]com/login" in parts["text/plain"]
    assert "[hxxps://example[.]com/login] こちら" in parts["text/html"]
    assert "href" not in parts["text/html"]
    assert "【注意】" not in parts["text/plain"]  # defang alone (tenant option) adds no banner


def test_html_to_text_replaces_the_html_alternative(run_rewrite: RunRewrite) -> None:
    raw = message(multipart(
        "alternative",
        leaf("text/plain", "plain version\n"),
        leaf("text/html", "<html><head><style>p{color:red}</style></head><body><h1>見出し</h1>"
                          '<p>本文 <a href="https://example.com/x">リンク</a></p>'
                          "<ul><li>一</li><li>二</li></ul></body></html>"),
    ))
    _, result = run_rewrite(raw, actions=("defang",), html_to_text=True)
    parts = text_parts(result.data)
    assert [c for c, _ in parts] == ["text/plain", "text/plain"]
    rendered = parts[1][1]
    assert "見出し" in rendered and "本文 リンク" in rendered and "- 一" in rendered
    assert "color:red" not in rendered
    assert "hxxps://example[.]com/x" in rendered and no_clickable_url(rendered)
    assert "html-to-text" in result.actions


# --- property: whatever the HTML or text, nothing clickable survives defanging -------------

_hosts = st.lists(st.sampled_from(["example", "evil", "www", "co", "jp", "xn--eckwd4c7c", "a-b"]),
                  min_size=1, max_size=4).map(".".join)
_urls = st.builds(lambda scheme, host, path: f"{scheme}://{host}{path}",
                  st.sampled_from(["http", "https", "HTTP", "hTTpS", "ftp"]), _hosts,
                  st.sampled_from(["", "/", "/a.b?c=d", "/ログイン", "#x", ":8080/p"]))
_words = st.text(alphabet="aeiou xyz日本語。、<>&\"'/:.\n", max_size=20)
_attr_quote = st.sampled_from(['"{}"', "'{}'", "{}"])


def _el(template: str) -> st.SearchStrategy[str]:
    return st.builds(lambda u, q, w: template.format(url=q.format(u), text=w),
                     _urls, _attr_quote, _words)


_fragments = st.one_of(
    _words.map(lambda w: w.replace("<", "&lt;").replace(">", "&gt;").replace("&", "&amp;")),
    _urls,
    _el("<a href={url}>{text}</a>"),
    _el("<A HREF={url} title=x>{text}</A>"),
    _el("<area href={url} alt=a>"),
    _el("<form action={url}><input formaction={url}></form>"),
    _el("<iframe src={url}></iframe>"),
    _el("<base href={url}>"),
    _el('<meta http-equiv="refresh" content="0;url={url}">'),
    _el("<!--[if mso]><a href={url}>{text}</a><![endif]-->"),
    _el("<svg><a xlink:href={url}>{text}</a></svg>"),
    st.sampled_from(["<b>http</b>s://split.example", "<p>", "</p>", "<div>", "</div>",
                     "<table><tr><td>", "</td></tr></table>", "<br>", "こちら", "http", "s://",
                     "<a>", "</a>", "<a href=javascript:alert(1)>x</a>", "www.example.com"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(html=st.lists(_fragments, max_size=15).map("".join),
       text=st.lists(st.one_of(_words, _urls, st.sampled_from(["こちら", "http", "s://", " "])),
                     max_size=15).map("".join))
def test_property_no_clickable_link_survives(run_rewrite: RunRewrite, html: str, text: str) -> None:
    raw = message(multipart(
        "alternative",
        leaf("text/plain", text + "\n", "utf-8", cte="base64"),
        leaf("text/html", html, "utf-8", cte="base64"),
    ))
    _, result = run_rewrite(raw, actions=("banner", "defang"))
    for ctype, body in text_parts(result.data):
        if ctype == "text/html":
            assert re.search(r"""(?i)href\s*=\s*["']?\s*(?:https?|ftp)""", body) is None
            doc = lxml.html.document_fromstring(body)
            for el in doc.iter():
                if isinstance(el.tag, str):
                    assert not any(a.lower().endswith("href") for a in el.attrib), el.attrib
            assert no_clickable_url(doc.text_content())
        else:
            assert no_clickable_url(body)


@pytest.mark.parametrize(("anchor", "expected"), [
    ('<a href="https://example.com">こちら</a>', "<a>[hxxps://example[.]com] こちら</a>"),
    ('<a href="https://example.com">https://example.com</a>', "<a>hxxps://example[.]com</a>"),
    ('<a href="#top">top</a>', "<a>top</a>"),
    ('<a href="mailto:a@example.com">mail</a>', "<a>[mailto:a@example.com] mail</a>"),
    ('<a href="https://example.com"><img src="cid:x"></a>',
     '<a>[hxxps://example[.]com] <img src="cid:x"></a>'),
])
def test_anchor_labels(anchor: str, expected: str) -> None:
    doc = parse_html(anchor)
    defang_html(doc.root)
    assert expected in serialize_html(doc)


@pytest.mark.parametrize(("url", "kept"), [
    ("https://portal.example.test/m/AbC123", True),
    ("HTTPS://PORTAL.EXAMPLE.TEST/m/AbC123", True),
    ("https://portal.example.test/m/AbC123/", True),
    ("https://portal.example.test/m/", False),  # no token: not a message page
    ("http://portal.example.test/m/AbC123", False),  # other scheme
    ("https://portal.example.test.evil.test/m/AbC123", False),  # longer host
    ("https://portal.example.test@evil.test/m/AbC123", False),  # userinfo trick
    ("https://portal.example.test:8443/m/AbC123", False),  # other port
    ("https://portal.example.test/login", False),  # not a message page
    ("https://portal.example.test/m/../admin", False),
])
def test_only_our_portal_links_stay_alive(url: str, kept: bool) -> None:
    keep = portal_links("https://portal.example.test/")
    assert keep(url) is kept
    assert (url in defang_text(f"see {url} now", keep)) is kept
    doc = parse_html(f'<a href="{url}">open</a>')
    defang_html(doc.root, keep)
    assert (doc.root.find(".//a").get("href") == url) is kept
