"""Keep-mail pages (issue 9) through FastAPI's TestClient on the real SQLite store and blobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mailmoat.keepmail import set_password
from mailmoat_web.app import create_app
from tests.unit.isolation.builders import message
from tests.unit.keepmail.helpers import PASSWORD, REMOTE, SCRIPTED_HTML, deliver, make_runtime
from tests.webforms import form_csrf


def html_message(subject: str = "HTML with a script") -> bytes:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "Sender <sender@sender.example>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    msg.set_content("Plain part https://phish.example/login\n")
    msg.add_alternative(SCRIPTED_HTML, subtype="html")
    msg.add_attachment(b"col1,col2\n1,2\n", maintype="text", subtype="csv", filename="figures.csv")
    return msg.as_bytes()


@pytest.fixture
def site(tmp_path: Path):
    runtime = make_runtime(tmp_path)
    store = runtime.services.keepmail
    set_password(store, "alice@example.test", PASSWORD)
    set_password(store, "bob@example.test", PASSWORD + " bob")
    client = TestClient(create_app(runtime, sweep_every=None))
    return runtime, client


def csrf(client: TestClient) -> str:
    return form_csrf(client.get("/k", follow_redirects=True).text)


def sign_in(client: TestClient, address: str = "alice@example.test", password: str = PASSWORD):
    return client.post("/k/signin", data={"csrf": csrf(client), "address": address, "password": password},
                       follow_redirects=False)


def test_sign_in_needs_csrf_and_the_right_password(site) -> None:
    _runtime, client = site
    assert client.post("/k/signin", data={"address": "alice@example.test", "password": PASSWORD}).status_code == 403
    assert sign_in(client, password="wrong password").status_code == 401
    assert sign_in(client, address="nobody@example.test").status_code == 401
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/k/inbox"
    cookie = response.headers["set-cookie"]
    assert "mm_keep=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert client.get("/k/inbox").status_code == 200


def test_inbox_lists_the_recipients_own_mail_with_outcomes(site) -> None:
    runtime, client = site
    deliver(runtime, html_message("<b>for both</b>"))
    deliver(runtime, message(subject="only bob"), rcpts=["bob@example.test"])
    assert client.get("/k/inbox", follow_redirects=False).status_code == 303  # not signed in
    sign_in(client)
    page = client.get("/k/inbox").text
    assert "&lt;b&gt;for both&lt;/b&gt;" in page and "<b>for both" not in page
    assert "only bob" not in page
    assert "配送済み" in page


def test_message_page_frames_a_sanitised_body(site) -> None:
    runtime, client = site
    message_id, _ctx = deliver(runtime, html_message())
    sign_in(client)
    response = client.get(f"/k/m/{message_id}")
    assert response.status_code == 200
    assert "frame-src 'self'" in response.headers["content-security-policy"]
    assert "script-src" not in response.headers["content-security-policy"]
    page = response.text
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page and "allow-scripts" not in page
    assert f'src="/k/m/{message_id}/body"' in page and REMOTE not in page
    assert "figures.csv" in page and "?images=1" in page
    body = client.get(f"/k/m/{message_id}/body")
    csp = body.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "https:" not in csp
    assert body.headers["x-frame-options"] == "SAMEORIGIN"
    assert "<script" not in body.text and REMOTE not in body.text and "onerror" not in body.text
    shown = client.get(f"/k/m/{message_id}/body?images=1")
    assert f"https://{REMOTE}/pixel.png" in shown.text and "https:" in shown.headers["content-security-policy"]
    (href,) = [h for h in page.split('href="')[1:] if h.startswith(f"/k/m/{message_id}/part/")]
    download = client.get(href.split('"', 1)[0])
    assert download.content == b"col1,col2\n1,2\n"
    assert download.headers["content-type"] == "application/octet-stream"


def test_another_recipients_message_is_not_found(site) -> None:
    runtime, client = site
    message_id, _ctx = deliver(runtime, message(subject="only bob"), rcpts=["bob@example.test"])
    sign_in(client)
    for path in (f"/k/m/{message_id}", f"/k/m/{message_id}/body", f"/k/m/{message_id}/part/2",
                 "/k/m/..%2F..%2Fetc", "/k/m/" + "x" * 300):
        assert client.get(path).status_code == 404, path


def test_isolated_files_link_to_the_recipients_own_portal_page(site) -> None:
    runtime, client = site
    message_id, ctx = deliver(runtime, message(("tool.exe", b"MZ\x90\x00", "application/octet-stream")))
    sign_in(client)
    page = client.get(f"/k/m/{message_id}").text
    assert 'class="portal-link" href="http://127.0.0.1:8080/m/' in page
    link = page.split('class="portal-link" href="', 1)[1].split('"', 1)[0]
    assert link.encode() in ctx.outputs["alice@example.test"]
    assert client.get(link.removeprefix("http://127.0.0.1:8080")).status_code == 200


def test_text_only_mail_is_escaped_and_defanged(site) -> None:
    runtime, client = site
    raw = message(subject="text", body="<script>alert(1)</script> see https://phish.example/x\n", html=False)
    message_id, _ctx = deliver(runtime, raw)
    sign_in(client)
    page = client.get(f"/k/m/{message_id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "hxxps://phish[.]example/x" in page and "<iframe" not in page


def test_sign_out_ends_the_session(site) -> None:
    _runtime, client = site
    sign_in(client)
    assert client.post("/k/signout", data={"csrf": csrf(client)}, follow_redirects=False).status_code == 303
    assert client.get("/k/inbox", follow_redirects=False).status_code == 303


def test_code_sign_in_through_the_pages(site) -> None:
    import email
    import re
    from email import policy

    runtime, client = site
    store = runtime.services.keepmail
    store.set_alternate("alice@example.test", "alice.home@alt.example")
    for address in ("alice@example.test", "nobody@example.test"):  # the same answer for both
        page = client.post("/k/code", data={"csrf": csrf(client), "address": address})
        assert page.status_code == 200 and 'name="code"' in page.text
    box = runtime.settings.data_dir / "maildir" / "alt.example" / "alice.home" / "new"
    (mail,) = box.iterdir()
    text = email.message_from_bytes(mail.read_bytes(), policy=policy.default).get_body(("plain",)).get_content()
    code = re.findall(r"\b\d{8}\b", text)[0]
    wrong = client.post("/k/code/verify", data={"csrf": csrf(client), "address": "alice@example.test",
                                                "code": "00000000" if code != "00000000" else "11111111"})
    assert wrong.status_code == 401
    ok = client.post("/k/code/verify", data={"csrf": csrf(client), "address": "alice@example.test", "code": code},
                     follow_redirects=False)
    assert ok.status_code == 303 and client.get("/k/inbox").status_code == 200


def test_inline_images_of_the_message_itself_are_shown(site) -> None:
    from email.message import EmailMessage

    runtime, client = site
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    msg = EmailMessage()
    msg["From"] = "sender@sender.example"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "inline"
    msg.set_content("text")
    msg.add_alternative('<p>logo: <img src="cid:logo@sender.example" alt="inline logo"></p>', subtype="html")
    msg.get_payload()[1].add_related(png, maintype="image", subtype="png", cid="<logo@sender.example>")
    message_id, _ctx = deliver(runtime, msg.as_bytes())
    sign_in(client)
    body = client.get(f"/k/m/{message_id}/body").text
    assert 'src="data:image/png;base64,iVBORw0KGgo' in body


def test_a_swept_copy_is_not_found_rather_than_an_error(site) -> None:
    from mailmoat.keepmail import blob_key

    runtime, client = site
    message_id, _ctx = deliver(runtime, html_message())
    runtime.services.blobs.delete(blob_key("alice@example.test", message_id))
    sign_in(client)
    assert client.get(f"/k/m/{message_id}").status_code == 404
    assert client.get(f"/k/m/{message_id}/body").status_code == 404


def test_refused_mail_shows_the_mailbox_answer(tmp_path) -> None:
    from mailmoat.ports import DeliveryError

    class Refuses:
        idempotent = True

        def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
            raise DeliveryError("552 5.3.4 message size exceeds fixed maximum", permanent=True, code=552)

    runtime = make_runtime(tmp_path, mailer=Refuses())
    set_password(runtime.services.keepmail, "alice@example.test", PASSWORD)
    message_id, _ctx = deliver(runtime, message(subject="too big"), rcpts=["alice@example.test"])
    client = TestClient(create_app(runtime, sweep_every=None))
    sign_in(client)
    inbox = client.get("/k/inbox?lang=en").text
    assert "Refused by your mailbox" in inbox
    page = client.get(f"/k/m/{message_id}?lang=en").text
    assert "552 5.3.4 message size exceeds fixed maximum" in page
