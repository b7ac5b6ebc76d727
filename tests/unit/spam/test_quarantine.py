"""The spam quarantine on the real local adapters (SQLite, files, Maildir): hold at delivery,
the digest and its signed links, release at most once, allow-sender, retention."""

from __future__ import annotations

import email
import email.policy
import re
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from itsdangerous.timed import TimestampSigner

from mailmoat.context import Envelope
from mailmoat.runner import raw_key
from mailmoat.runtime import Runtime
from mailmoat.spam import digest, quarantine
from mailmoat_web.app import create_app
from tests.unit.spam.helpers import LISTED_IP, SENDER_SPF_PASS, message, spam_runtime, tenant_config
from tests.webforms import form_csrf

LINK = re.compile(r"https?://\S+/s/[A-Za-z0-9_.\-]+")


def maildir(runtime: Runtime, address: str) -> list[Path]:
    local, _, domain = address.partition("@")
    box = runtime.settings.data_dir / "maildir" / domain / local / "new"
    return sorted(box.iterdir()) if box.exists() else []


def receive(runtime: Runtime, rcpts: list[str], raw: bytes | None = None) -> str:
    envelope = Envelope(client_ip=LISTED_IP, helo="mx.sender.example",
                        mail_from="promo@sender.example", rcpt_to=rcpts)
    message_id = runtime.accept(raw or message(), envelope)
    runtime.process_stored(message_id)
    return message_id


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return spam_runtime(tmp_path, tenant_config(action="quarantine"), zone_extra=SENDER_SPF_PASS)


def test_held_copy_is_stored_and_accounted(runtime: Runtime) -> None:
    mid = receive(runtime, ["alice@example.test", "carol@example.test"])
    record = runtime.services.log.get(mid)
    assert record is not None and record.state == "delivered"  # carol got hers
    assert record.report is not None
    assert record.report["deliveries"]["alice@example.test"] == "quarantined: spam"
    assert record.report["deliveries"]["carol@example.test"].startswith("delivered")
    assert maildir(runtime, "alice@example.test") == []
    assert len(maildir(runtime, "carol@example.test")) == 1
    stored = runtime.services.blobs.get(f"spamq/{mid}/alice@example.test")
    assert b"X-Spam-Flag: YES" in stored and b"ARC-Seal:" in stored
    store = runtime.services.spam
    assert store is not None
    (held,) = store.held()
    assert (held.message_id, held.recipient, held.subject) == (mid, "alice@example.test",
                                                               "Cheap watches")
    assert held.sources == ["dnsbl:bl.test", ] and held.sender == "promo@sender.example"
    assert held.expires_at - held.held_at == timedelta(days=30)


def test_every_copy_held_means_quarantined(runtime: Runtime) -> None:
    mid = receive(runtime, ["alice@example.test", "bob@example.test"])
    record = runtime.services.log.get(mid)
    assert record is not None and record.state == "quarantined"
    assert record.report is not None and record.report["disposition"] == "quarantine"
    # A re-run (redrive) keeps one record per copy and delivers nothing.
    runtime.runner.redrive(mid)  # every stage again
    runtime.process_stored(mid)
    store = runtime.services.spam
    assert store is not None and len(store.held()) == 2
    assert maildir(runtime, "alice@example.test") == []


def test_release_delivers_the_stored_bytes_once(runtime: Runtime) -> None:
    mid = receive(runtime, ["alice@example.test", "bob@example.test"])
    stored = runtime.services.blobs.get(f"spamq/{mid}/alice@example.test")
    result = quarantine.release(runtime.services, mid, "alice@example.test")
    assert result.status == "released"
    (delivered,) = maildir(runtime, "alice@example.test")
    # Our Maildir adds Return-Path and Delivered-To and writes LF line ends; the rest is as held.
    body = delivered.read_bytes().split(b"\n", 2)[2]
    assert body == stored.replace(b"\r\n", b"\n")
    assert quarantine.release(runtime.services, mid, "alice@example.test").status == "already"
    assert len(maildir(runtime, "alice@example.test")) == 1
    record = runtime.services.log.get(mid)
    assert record is not None and record.state == "delivered"
    assert record.report is not None
    assert record.report["deliveries"]["alice@example.test"].endswith("(released from spam quarantine)")
    assert record.report["deliveries"]["bob@example.test"] == "quarantined: spam"
    # A redrive after the release does not hold (or deliver) alice's copy again.
    runtime.runner.redrive(mid)  # every stage again
    ctx = runtime.process_stored(mid)
    assert ctx is not None and ctx.deliveries["alice@example.test"].startswith("delivered")
    assert len(maildir(runtime, "alice@example.test")) == 1


def test_allow_sender_adds_to_the_list_and_releases(runtime: Runtime) -> None:
    mid = receive(runtime, ["alice@example.test"])
    result = quarantine.allow_sender_and_release(runtime.services, mid, "alice@example.test")
    assert result.status == "released"
    store = runtime.services.spam
    assert store is not None
    assert store.allowed_senders("alice@example.test") == ["promo@sender.example"]
    assert store.allowed_senders("bob@example.test") == []
    # The next message from that sender reaches alice untouched by the spam decision.
    receive(runtime, ["alice@example.test"], message(subject="Again"))
    assert len(maildir(runtime, "alice@example.test")) == 2


def test_digest_lists_new_copies_once_with_working_links(runtime: Runtime) -> None:
    receive(runtime, ["alice@example.test", "bob@example.test"])
    receive(runtime, ["alice@example.test"], message(subject="<b>Second</b> & more"))
    run = digest.send_digests(runtime.services)
    assert run.sent == {"alice@example.test": 2, "bob@example.test": 1}
    assert digest.send_digests(runtime.services).sent == {}  # nothing new since
    (mail,) = maildir(runtime, "bob@example.test")
    msg = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "Spam quarantine: 1 message(s) held"
    assert msg["From"] == runtime.settings.postmaster and msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Cheap watches" in text and "81.2" not in text
    links = LINK.findall(text)
    assert len(links) == 2
    alice_digest = email.message_from_bytes(maildir(runtime, "alice@example.test")[0].read_bytes(),
                                            policy=email.policy.default)
    html = alice_digest.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "&lt;b&gt;Second&lt;/b&gt; &amp; more" in html and "<b>Second" not in html


def test_japanese_digest(tmp_path: Path) -> None:
    runtime = spam_runtime(tmp_path, tenant_config(action="quarantine", language="ja"))
    receive(runtime, ["alice@example.test"])
    digest.send_digests(runtime.services)
    msg = email.message_from_bytes(maildir(runtime, "alice@example.test")[0].read_bytes(),
                                   policy=email.policy.default)
    assert msg["Subject"] == "【迷惑メール】隔離されたメッセージ 1 件"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "受信する" in text and "この差出人を常に許可して受信する" in text


def test_links_are_signed_bound_and_expire(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = runtime.settings
    url = digest.sign_link(settings, "release", "m-1", "Alice@Example.test")
    token = url.rsplit("/", 1)[1]
    claim = digest.read_link(settings, token, 30)
    assert claim == digest.LinkClaim("release", "m-1", "alice@example.test")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert digest.read_link(settings, tampered, 30) is None
    # A link minted 31 days ago is past a 30-day retention.
    monkeypatch.setattr(TimestampSigner, "get_timestamp",
                        lambda _self: int(time.time()) - 31 * 86400)
    old = digest.sign_link(settings, "release", "m-1", "alice@example.test").rsplit("/", 1)[1]
    monkeypatch.undo()
    assert digest.read_link(settings, old, 31) is not None
    assert digest.read_link(settings, old, 30) is None
    secret = settings.data_dir / "spam" / "link-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # Another gateway (another key) cannot mint links for this one.
    other = settings.model_copy(update={"data_dir": settings.data_dir.parent / "other"})
    assert digest.read_link(other, token, 30) is None


def test_expired_copies_are_swept(runtime: Runtime) -> None:
    mid = receive(runtime, ["alice@example.test"])
    later = runtime.services.clock.now() + timedelta(days=31)
    run = digest.send_digests(runtime.services, later)
    assert run.swept == 1 and run.sent == {}
    assert not runtime.services.blobs.exists(f"spamq/{mid}/alice@example.test")
    assert runtime.services.blobs.exists(raw_key(mid))  # the raw message has its own lifecycle
    assert quarantine.release(runtime.services, mid, "alice@example.test").status == "unknown"


# --- the link pages ------------------------------------------------------------------------

def links_for(runtime: Runtime, rcpt: str) -> dict[str, str]:
    digest.send_digests(runtime.services)
    msg = email.message_from_bytes(maildir(runtime, rcpt)[-1].read_bytes(),
                                   policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    release_url, allow_url = LINK.findall(text)[:2]
    return {"release": release_url.split("/s/", 1)[1], "allow": allow_url.split("/s/", 1)[1]}


def test_get_never_releases_post_with_csrf_does(runtime: Runtime) -> None:
    mid = receive(runtime, ["alice@example.test"])
    token = links_for(runtime, "alice@example.test")["release"]
    client = TestClient(create_app(runtime, sweep_every=None))
    for _ in range(3):  # a link scanner, a preview, the reader
        page = client.get(f"/s/{token}")
        assert page.status_code == 200
        assert "Cheap watches" in page.text and 'method="post"' in page.text
    assert len(maildir(runtime, "alice@example.test")) == 1  # only the digest
    assert client.post(f"/s/{token}", data={"csrf": "forged"}).status_code == 403
    no_cookie = TestClient(create_app(runtime, sweep_every=None))
    assert no_cookie.post(f"/s/{token}", data={"csrf": ""}).status_code == 403
    done = client.post(f"/s/{token}", data={"csrf": form_csrf(page.text)})
    assert done.status_code == 200 and "delivered to your inbox" in done.text
    assert len(maildir(runtime, "alice@example.test")) == 2
    again = client.post(f"/s/{token}", data={"csrf": form_csrf(page.text)})
    assert "already been delivered" in again.text
    assert len(maildir(runtime, "alice@example.test")) == 2
    assert runtime.services.spam.get(mid, "alice@example.test").state == "released"  # type: ignore[union-attr]


def test_allow_link_page(runtime: Runtime) -> None:
    receive(runtime, ["alice@example.test"])
    token = links_for(runtime, "alice@example.test")["allow"]
    client = TestClient(create_app(runtime, sweep_every=None))
    page = client.get(f"/s/{token}?lang=ja")
    assert "promo@sender.example" in page.text and "この差出人を許可して受信する" in page.text
    done = client.post(f"/s/{token}", data={"csrf": form_csrf(page.text)})
    assert "受信トレイに届けました" in done.text
    assert runtime.services.spam.allowed_senders("alice@example.test") == [  # type: ignore[union-attr]
        "promo@sender.example"]


@pytest.mark.parametrize("token", ["nonsense", "a" * 2000, "eyJhIjoicmVsZWFzZSJ9.x.y"])
def test_bad_links_are_404(runtime: Runtime, token: str) -> None:
    client = TestClient(create_app(runtime, sweep_every=None))
    assert client.get(f"/s/{token}").status_code == 404
    client.get("/")  # a CSRF cookie from any page
    assert client.post(f"/s/{token}", data={"csrf": "0" * 64}).status_code in (403, 404)
