"""PPAP pairing (issue 17 item 1): passwords in the same mail or an authenticated follow-up open
a held encrypted file; the password is never kept anywhere."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mailmoat.context import Envelope, MessageContext
from mailmoat.ppap import password_candidates, subject_key
from mailmoat.runtime import Runtime
from mailmoat_web.app import create_app
from tests.e2e.test_portal import TOKEN_URL
from tests.unit.isolation.builders import aes_zip, make_runtime

PASSWORD = "Kx7-pq92Zt"
MEMBERS = {"見積書.txt": "御見積金額 12,000 円\n".encode(), "data/list.csv": b"a,b\n1,2\n"}
ZONE = {"sender.example": {"TXT": ["v=spf1 ip4:203.0.113.0/24 -all"]},
        "other.example": {"TXT": ["v=spf1 ip4:198.51.100.0/24 -all"]}}
ALICE = ["alice@example.test"]


@pytest.mark.parametrize(("text", "expected"), [
    ("パスワードは 1234abcd です。", "1234abcd"),
    ("パスワード：「Abc-123」", "Abc-123"),
    ("解凍パスワード＝１２３４５６", "123456"),
    ("先ほどの添付ファイルのパスワードをお送りします。\n\nパスワード：ｘＹ７８９０\n", "xY7890"),
    ("パスワードは以下の通りです。\n\n  Qw8#zR\n", "Qw8#zR"),
    ("パスワード【a1b2c3】", "a1b2c3"),
    ("The password is hunter22.", "hunter22"),
    ("Password (case sensitive): XyZ987", "XyZ987"),
    ("the password for the attached file is \"p@ss w0rd\"", "p@ss w0rd"),
    ("PW: abcd1234", "abcd1234"),
    ("Here it is:\n```\nzip-pass-77\n```\n", "zip-pass-77"),
])
def test_candidates_from_japanese_and_english_phrasings(text: str, expected: str) -> None:
    assert expected in password_candidates([text])


@pytest.mark.parametrize("text", [
    "パスワードは別途お送りします。", "パスワードを別メールでお送りします。\nよろしくお願いします。",
    "添付ファイルをご確認ください。", "Password will follow separately.",
])
def test_no_candidates_from_mail_that_only_announces_one(text: str) -> None:
    assert password_candidates([text]) == []


def test_candidates_are_bounded() -> None:
    text = "\n".join(f"password: pw{i:04d}xx" for i in range(50))
    assert len(password_candidates([text])) == 10


def test_subject_keys_ignore_reply_prefixes_and_tags() -> None:
    assert subject_key("Re: 【パスワード】見積書送付の件") == subject_key("見積書送付の件")
    assert subject_key("FW: ＲＥ：見積書") == subject_key("見積書")
    assert subject_key("Password for: Quote 123") == "quote 123"


# --- through the pipeline --------------------------------------------------------------------

def _runtime(tmp_path: Path, **settings: object) -> Runtime:
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(ZONE))
    return make_runtime(tmp_path / "var", dns_zone=zone, **settings)


def _mail(*, body: str, subject: str = "見積書送付の件", zipped: bytes | None = None,
          sender: str = "sender@sender.example", to: str = "alice@example.test",
          message_id: str = "<first@sender.example>", in_reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Thu, 03 Dec 2026 10:00:00 +0900"
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    if zipped is not None:
        msg.add_attachment(zipped, maintype="application", subtype="zip", filename="見積書.zip")
    return msg.as_bytes()


def _run(runtime: Runtime, raw: bytes, *, sender: str = "sender@sender.example",
         ip: str = "203.0.113.5", rcpt: list[str] | None = None) -> MessageContext:
    return runtime.analyse(raw, Envelope(client_ip=ip, helo="mx.sender.example", mail_from=sender,
                                         rcpt_to=list(rcpt or ALICE)),
                           stages=("authenticate", "scan", "isolate", "rewrite"))


def _token(ctx: MessageContext, rcpt: str = "alice@example.test") -> str:
    msg = message_from_bytes(ctx.outputs.get(rcpt) or ctx.output or b"", policy=policy.default)
    for node in msg.walk():
        if node.get_content_type() == "text/plain":
            found = TOKEN_URL.findall(str(node.get_content()))
            if found:
                return str(found[0])
    raise AssertionError("no portal link")


def _text(ctx: MessageContext) -> str:
    msg = message_from_bytes(ctx.output or ctx.raw, policy=policy.default)
    return "".join(str(n.get_content()) for n in msg.walk() if n.get_content_type() == "text/plain")


def _everything_stored(runtime: Runtime) -> bytes:
    data = runtime.settings.data_dir
    return b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())


def test_a_follow_up_password_opens_the_held_zip(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    runtime = _runtime(tmp_path)
    first = _run(runtime, _mail(body="見積書を送付します。パスワードは別途お送りします。",
                                zipped=aes_zip(MEMBERS, PASSWORD)))
    assert first.auth.spf == "pass"
    token = _token(first)
    client = TestClient(create_app(runtime))
    page = client.get(f"/m/{token}").text
    assert 'type="password"' in page  # nothing opened yet: the password form

    follow = _run(runtime, _mail(body=f"先ほどのメールのパスワードです。\n\nパスワード：{PASSWORD}\n",
                                 subject="【パスワード】見積書送付の件",
                                 message_id="<second@sender.example>",
                                 in_reply_to="<first@sender.example>"))
    assert follow.has("PPAP_PASSWORD_USED")
    assert "ppap-note" in follow.actions
    assert "【パスワードの利用】" in _text(follow) and "見積書.zip" in _text(follow)

    page = client.get(f"/m/{token}").text  # the same link, reloaded
    assert 'type="password"' not in page
    assert "後から届いたメールに書かれていたパスワード" in page
    assert "見積書.txt" in page and "data/list.csv" in page
    assert PASSWORD not in page
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    path = next(a.path for a in first.attachments if a.filename == "見積書.zip")
    got = client.post(f"/m/{token}/f/{path}/opened", data={"csrf": csrf, "index": "0"})
    assert got.status_code == 200 and got.content == MEMBERS["見積書.txt"]
    assert runtime.services.isolation.downloads(first.id)[-1].kind == "opened:見積書.txt"  # type: ignore[union-attr]

    assert PASSWORD.encode() not in _everything_stored(runtime).replace(
        follow.raw, b"")  # only the follow-up's own stored original holds it
    assert not [r for r in caplog.records if PASSWORD in r.getMessage() or PASSWORD in str(r.__dict__)]


def test_the_password_in_the_same_mail_opens_it(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    ctx = _run(runtime, _mail(body=f"見積書を送付します。\nパスワードは {PASSWORD} です。\n",
                              zipped=aes_zip(MEMBERS, PASSWORD)))
    assert ctx.has("PPAP_OPENED")
    page = TestClient(create_app(runtime)).get(f"/m/{_token(ctx)}").text
    assert "メールに書かれていたパスワードでこのファイルを開き" in page
    assert 'type="password"' not in page and PASSWORD not in page


@pytest.mark.parametrize("change", ["other-domain", "unauthenticated", "other-recipients",
                                    "unlinked", "too-late", "switched-off"])
def test_a_follow_up_that_does_not_qualify_opens_nothing(tmp_path: Path, change: str) -> None:
    runtime = _runtime(tmp_path)
    if change == "switched-off":
        tenant = runtime.services.config.tenant_for_domain("example.test")  # type: ignore[attr-defined]
        tenant.ppap_pairing = False
    first = _run(runtime, _mail(body="見積書を送付します。", zipped=aes_zip(MEMBERS, PASSWORD)))
    kwargs: dict[str, object] = {}
    mail: dict[str, object] = {"body": f"パスワード：{PASSWORD}", "message_id": "<2@sender.example>",
                               "in_reply_to": "<first@sender.example>"}
    if change == "other-domain":
        mail["sender"] = "someone@other.example"
        kwargs = {"sender": "someone@other.example", "ip": "198.51.100.7"}
    elif change == "unauthenticated":
        kwargs = {"ip": "192.0.2.99"}  # not in sender.example's SPF: fails
    elif change == "other-recipients":
        kwargs = {"rcpt": ["alice@example.test", "bob@example.test"]}
    elif change == "unlinked":
        mail.update(in_reply_to=None, subject="全く別の件")
    elif change == "too-late":
        clock = runtime.services.clock
        later = clock.now() + timedelta(minutes=31)
        runtime.services.clock = type("Later", (), {"now": staticmethod(lambda: later)})()  # type: ignore[assignment]
    follow = _run(runtime, _mail(**mail), **kwargs)  # type: ignore[arg-type]
    assert not follow.has("PPAP_PASSWORD_USED")
    assert runtime.services.isolation.opened(first.id, first.attachments[-1].path) is None  # type: ignore[union-attr]


def test_wrong_candidates_leave_the_file_as_it_was(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    first = _run(runtime, _mail(body="見積書です。", zipped=aes_zip(MEMBERS, PASSWORD)))
    follow = _run(runtime, _mail(body="パスワード：wrong-one-1\nPW: wrong-two-2",
                                 message_id="<2@sender.example>",
                                 in_reply_to="<first@sender.example>"))
    assert not follow.has("PPAP_PASSWORD_USED") and "ppap-note" not in follow.actions
    page = TestClient(create_app(runtime)).get(f"/m/{_token(first)}").text
    assert 'type="password"' in page


def test_the_sweep_removes_what_a_password_opened_with_the_file(tmp_path: Path) -> None:
    from mailmoat.isolation import sweep

    runtime = _runtime(tmp_path)
    ctx = _run(runtime, _mail(body=f"パスワードは {PASSWORD} です。", zipped=aes_zip(MEMBERS, PASSWORD)))
    store = runtime.services.isolation
    assert store is not None
    path = next(a.path for a in ctx.attachments if a.filename == "見積書.zip")
    opened = store.opened(ctx.id, path)
    assert opened is not None and all(m.blob_key for m in opened.members)
    keys = [m.blob_key for m in opened.members if m.blob_key]
    assert all(runtime.services.blobs.get(k) for k in keys)
    sweep(store, runtime.services.blobs, runtime.services.clock.now() + timedelta(days=400))
    for key in keys:
        with pytest.raises(Exception):  # the store's own not-found error
            runtime.services.blobs.get(key)
    assert store.opened(ctx.id, path) is None


def test_one_follow_up_tries_a_bounded_number_of_held_files(tmp_path: Path) -> None:
    from mailmoat import ppap

    runtime = _runtime(tmp_path)
    firsts = [_run(runtime, _mail(body="見積書です。", zipped=aes_zip(MEMBERS, PASSWORD),
                                  message_id=f"<f{i}@sender.example>"))
              for i in range(ppap.MAX_FILES_PER_FOLLOW_UP + 2)]
    follow = _run(runtime, _mail(body=f"パスワード：{PASSWORD}", message_id="<pw@sender.example>"))
    opened = [f for f in firsts
              if runtime.services.isolation.opened(f.id, f.attachments[-1].path) is not None]  # type: ignore[union-attr]
    assert len(opened) == ppap.MAX_FILES_PER_FOLLOW_UP
    assert firsts[-1] in opened and firsts[0] not in opened  # newest first
    assert len([f for f in follow.findings if f.symbol == "PPAP_PASSWORD_USED"]) == len(opened)
