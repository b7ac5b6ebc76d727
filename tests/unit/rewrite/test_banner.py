"""The warning banner: in every body part, in the tenant's language, readable in Japanese charsets."""

from __future__ import annotations

import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.settings import Settings
from tests.unit.rewrite.conftest import RunRewrite
from tests.unit.rewrite.helpers import leaf, message, multipart, parse, text_parts

ORIGINAL = "いつもお世話になっております。①㈱ⅰ髙 の件です。"
LINK = "https://example.com/login"


def alternative(charset: str = "utf-8") -> bytes:
    return message(multipart(
        "alternative",
        leaf("text/plain", f"{ORIGINAL}\n{LINK}\n", charset),
        leaf("text/html", f'<html><body><p>{ORIGINAL}</p><a href="{LINK}">こちら</a></body></html>',
             charset),
    ))


@pytest.mark.parametrize(("language", "expected", "absent"), [
    ("ja", ["【注意】このメールの差出人を確認できませんでした", "Caution: the sender"], ["CAUTION:"]),
    ("en", ["CAUTION: the sender of this message could not be verified"], ["【注意】"]),
])
def test_banner_in_text_and_html_parts_in_tenant_language(
        run_rewrite: RunRewrite, language: str, expected: list[str], absent: list[str]) -> None:
    _, result = run_rewrite(alternative(), actions=("banner",), language=language)
    parts = text_parts(result.data)
    assert [ctype for ctype, _ in parts] == ["text/plain", "text/html"]
    for ctype, text in parts:
        for phrase in expected:
            assert phrase in text, (ctype, phrase)
        for phrase in absent:
            assert phrase not in text
        assert "SPF: fail, DMARC: fail" in text
        assert ORIGINAL in text
        # the banner comes first: before the original text
        assert text.index(expected[0]) < text.index(ORIGINAL)
    assert "banner" in result.actions


@pytest.mark.parametrize("charset", ["iso-2022-jp", "shift_jis", "utf-8", "euc-jp"])
@pytest.mark.parametrize("actions", [("banner",), ("banner", "defang")])
def test_japanese_bodies_round_trip_readable(run_rewrite: RunRewrite, charset: str,
                                             actions: tuple[str, ...]) -> None:
    original = ORIGINAL if charset in ("iso-2022-jp", "shift_jis") else "いつもお世話になっております。"
    raw = message(multipart(
        "alternative",
        leaf("text/plain", f"{original}\n{LINK}\n", charset, cte="7bit" if charset == "iso-2022-jp"
             else "8bit"),
        leaf("text/html", f'<p>{original}</p><a href="{LINK}">こちら</a>', charset,
             cte="base64"),
    ))
    _, result = run_rewrite(raw, actions=actions)
    for part in parse(result.data).walk():
        if part.get_content_maintype() == "text":
            # A charset that can hold banner and text is kept (NEC characters included).
            assert part.get_content_charset() == charset
    for ctype, text in text_parts(result.data):
        assert original in text, ctype
        assert "【注意】" in text, ctype
        if "defang" in actions:
            assert "hxxps://example[.]com/login" in text
            assert "安全のため、このメール内のリンクは無効化されています" in text
        else:
            assert "無効化" not in text


def test_banner_only_keeps_original_iso2022jp_bytes(run_rewrite: RunRewrite) -> None:
    body = leaf("text/plain", ORIGINAL + "\n", "iso-2022-jp", cte="7bit")
    original_bytes = body.split(b"\r\n\r\n", 1)[1]
    _, result = run_rewrite(message(body), actions=("banner",))
    assert original_bytes in result.data


def test_charset_that_cannot_hold_the_banner_becomes_utf8(run_rewrite: RunRewrite) -> None:
    raw = message(leaf("text/plain", "Bonjour, café crème\n", "iso-8859-1", cte="8bit"))
    _, result = run_rewrite(raw, actions=("banner",))
    [(_, text)] = text_parts(result.data)
    assert "Bonjour, café crème" in text and "【注意】" in text
    assert parse(result.data).get_content_charset() == "utf-8"


def test_dmarc_p_none_warns_but_leaves_links(run_rewrite: RunRewrite) -> None:
    # policy.decide puts only "banner" in the actions when DMARC p=none was the only failure
    _, result = run_rewrite(alternative(), actions=("banner",), spf="pass", dkim="pass",
                            dmarc="fail")
    parts = dict(text_parts(result.data))
    assert "【注意】" in parts["text/html"]
    assert f'href="{LINK}"' in parts["text/html"]
    assert LINK in parts["text/plain"]
    assert "無効化" not in parts["text/plain"]
    assert "DMARC: fail" in parts["text/plain"]


HOSTILE_NAME = "<img src=x onerror=alert(1)>"


@pytest.mark.parametrize("from_", [
    f'"{HOSTILE_NAME}" <evil@example.com>',
    "=?utf-8?b?PGltZyBzcmM9eCBvbmVycm9yPWFsZXJ0KDEpPg==?= <evil@example.com>",
])
def test_inserted_values_are_html_escaped(run_rewrite: RunRewrite, from_: str) -> None:
    raw = message(leaf("text/html", "<p>hello</p>", "utf-8"), from_=from_)
    _, result = run_rewrite(raw, actions=("banner",))
    [(_, html)] = text_parts(result.data)
    assert HOSTILE_NAME not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    doc = lxml.html.document_fromstring(html)
    assert doc.xpath("//img") == []
    assert not any("onerror" in el.attrib for el in doc.iter() if isinstance(el.tag, str))


def test_url_in_sender_name_is_defanged_in_banner(run_rewrite: RunRewrite) -> None:
    raw = message(leaf("text/plain", "hi\n"), from_='"https://bank.example.com" <x@evil.test>')
    _, result = run_rewrite(raw, actions=("banner",))
    [(_, text)] = text_parts(result.data)
    assert "hxxps://bank[.]example[.]com" in text
    assert "https://" not in text


def test_html_banner_is_first_in_body_and_table_based(run_rewrite: RunRewrite) -> None:
    raw = message(leaf("text/html", "Leading text<p>para</p>", "utf-8"))
    _, result = run_rewrite(raw, actions=("banner",), language="en")
    [(_, html)] = text_parts(result.data)
    body = lxml.html.document_fromstring(html).body
    first = body[0]
    assert first.tag == "table"
    assert (body.text or "").strip() == ""
    assert first.tail.startswith("Leading text")
    assert "background-color" in first.xpath(".//td")[0].get("style")


def test_tenant_template_override(run_rewrite: RunRewrite, settings: Settings) -> None:
    custom = settings.data_dir / "templates" / "t"
    custom.mkdir(parents=True)
    (custom / "banner_en.txt").write_text("ACME SECURITY: unverified sender $sender\n",
                                          encoding="utf-8")
    _, result = run_rewrite(message(leaf("text/plain", "hi\n")), actions=("banner",),
                            language="en")
    [(_, text)] = text_parts(result.data)
    assert text.startswith("ACME SECURITY: unverified sender Taro Yamada <taro@example.com>")


def test_attached_message_gets_no_banner(run_rewrite: RunRewrite) -> None:
    inner = message(leaf("text/plain", "forwarded body\n"))
    raw = message(multipart(
        "mixed", leaf("text/plain", "outer body\n"),
        b"Content-Type: message/rfc822\r\n\r\n" + inner))
    _, result = run_rewrite(raw, actions=("banner",))
    texts = [t for _, t in text_parts(result.data)]
    assert "【注意】" in texts[0]
    assert "forwarded body" in texts[1] and "【注意】" not in texts[1]


@pytest.mark.parametrize("entity", [
    b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=a.pdf\r\n\r\nJVBERi0xLjQK\r\n",
    multipart("mixed", b"Content-Type: application/zip\r\nContent-Disposition: attachment;"
                       b" filename=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsFBgAA\r\n"),
], ids=["single-attachment", "attachments-only"])
def test_message_without_body_part_gets_banner_part(run_rewrite: RunRewrite,
                                                   entity: bytes) -> None:
    _, result = run_rewrite(message(entity), actions=("banner",))
    assert entity in result.data
    msg = parse(result.data)
    assert msg.get_content_type() == "multipart/mixed"
    first = next(msg.iter_parts())
    assert first.get_content_type() == "text/plain" and "【注意】" in first.get_content()


_JP_ALPHABET = "あいうえおアイウエオ漢字試験①②㈱㍻ⅰⅱ髙﨑～－ー　。、「」abc 123\n"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=_JP_ALPHABET, min_size=1, max_size=60),
       charset=st.sampled_from(["iso-2022-jp", "shift_jis"]),
       defang=st.booleans())
def test_property_japanese_text_survives(run_rewrite: RunRewrite, text: str, charset: str,
                                         defang: bool) -> None:
    raw = message(leaf("text/plain", text, charset, cte="7bit" if charset == "iso-2022-jp"
                       else "8bit"))
    _, result = run_rewrite(raw, actions=("banner", "defang") if defang else ("banner",))
    [(_, out)] = text_parts(result.data)
    assert out.replace("\r\n", "\n").endswith(text.replace("\r\n", "\n"))
    assert parse(result.data).get_content_charset() == charset


def test_rewrite_starts_from_an_earlier_stages_output(run_rewrite: RunRewrite) -> None:
    raw = message(multipart("mixed", leaf("text/plain", "body\n"),
                            b"Content-Type: application/zip\r\nContent-Disposition: attachment;"
                            b" filename=a.zip\r\n\r\nPK\r\n"))
    isolated = message(leaf("text/plain", "body\n\n[a.zip was isolated]\n"))
    _, result = run_rewrite(raw, actions=("banner",), output=isolated)
    [(_, text)] = text_parts(result.data)
    assert "【注意】" in text and "[a.zip was isolated]" in text


@pytest.mark.parametrize("charset", ["iso-2022-jp", "shift_jis"])
def test_html_keeps_japanese_charset_with_nbsp_and_emoji(run_rewrite: RunRewrite,
                                                         charset: str) -> None:
    html = '<p>ご案内&nbsp;です &#128512; <a href="https://example.com">こちら</a></p>'
    raw = message(leaf("text/html", html, charset, cte="base64"))
    _, result = run_rewrite(raw, actions=("banner", "defang"))
    assert parse(result.data).get_content_charset() == charset
    [(_, out)] = text_parts(result.data)
    text = lxml.html.document_fromstring(out).text_content()
    assert "ご案内\u00a0です \U0001F600" in text and "【注意】" in text
