"""The isolate stage (DESIGN §1 stage 3, §4; issue 5): files out, notice in, records and tokens."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailmoat.context import Disposition
from mailmoat.isolation import hash_token, resolve, sweep
from tests.unit.isolation.builders import (
    EICAR_LIKE,
    RECIPIENTS,
    aes_zip,
    analyse,
    clean_pdf,
    make_runtime,
    message,
)

TOKEN_URL = re.compile(r"http://127\.0\.0\.1:8080/m/([A-Za-z0-9_-]+)")


def parts(raw: bytes) -> list[tuple[str, str | None, bytes]]:
    msg = message_from_bytes(raw, policy=policy.default)
    out = []
    for node in msg.walk():
        if node.is_multipart():
            continue
        out.append((node.get_content_type(), node.get_filename(),
                    node.get_payload(decode=True) or b""))
    return out


def text_of(raw: bytes, ctype: str) -> str:
    msg = message_from_bytes(raw, policy=policy.default)
    for node in msg.walk():
        if node.get_content_type() == ctype:
            return str(node.get_content())
    raise AssertionError(f"no {ctype} part")


@pytest.fixture
def runtime(tmp_path: Path):
    return make_runtime(tmp_path / "var")


def test_encrypted_zip_is_isolated_with_notice_and_the_pdf_stays(runtime) -> None:
    zip_bytes, pdf = aes_zip({"report.txt": b"member bytes\n"}), clean_pdf()
    ctx = analyse(runtime, message(("請求書.zip", zip_bytes, "application/zip"),
                                   ("clean.pdf", pdf, "application/pdf")))
    assert ctx.disposition == Disposition.DELIVER
    by_name = {a.filename: a for a in ctx.attachments}
    assert by_name["請求書.zip"].action == "isolate" and by_name["clean.pdf"].action == "keep"
    assert "isolate" in ctx.actions
    assert ctx.portal_url is not None and TOKEN_URL.fullmatch(ctx.portal_url)
    assert set(ctx.outputs) == set(RECIPIENTS)
    for rcpt, out in ctx.outputs.items():
        files = [(c, n) for c, n, _ in parts(out) if n]
        assert files == [("application/pdf", "clean.pdf")], rcpt
        assert [d for c, n, d in parts(out) if n == "clean.pdf"] == [pdf]
        plain, html = text_of(out, "text/plain"), text_of(out, "text/html")
        assert plain.index("添付ファイルはセキュリティポリシーにより分離されました") < plain.index("パスワードは")
        assert "有効期限 30 日" in plain and "請求書.zip" in plain
        assert html.index("分離されました") < html.index("パスワードは")
        assert len(set(TOKEN_URL.findall(plain))) == 1
    # One token per recipient, each in that recipient's copy only.
    tokens = {r: TOKEN_URL.findall(text_of(o, "text/plain"))[0] for r, o in ctx.outputs.items()}
    assert tokens["alice@example.test"] != tokens["bob@example.test"]
    store = runtime.services.isolation
    now = datetime.now(UTC)
    for rcpt, token in tokens.items():
        assert len(token) >= 22  # ≥ 128 bits in URL-safe base64
        access = resolve(store, token, now)
        assert access is not None and access.recipient == rcpt and access.message_id == ctx.id
        assert access.expires_at - now > timedelta(days=29)
    # The original bytes are kept for the portal, with their hash and verdict.
    [record] = store.files(ctx.id)
    assert record.verdict == "encrypted" and record.symbols == ["ENCRYPTED_ARCHIVE"]
    assert record.blob_key == f"isolated/{ctx.id}/2"
    assert runtime.services.blobs.get(record.blob_key) == zip_bytes
    assert record.sha256 == hashlib.sha256(zip_bytes).hexdigest()


def test_tokens_are_stored_only_as_hashes(runtime, tmp_path: Path) -> None:
    ctx = analyse(runtime, message(("a.zip", aes_zip({"a.txt": b"x"}), "application/zip")))
    tokens = {TOKEN_URL.findall(text_of(o, "text/plain"))[0] for o in ctx.outputs.values()}
    db = sqlite3.connect(tmp_path / "var" / "mailmoat.sqlite3")
    rows = db.execute("SELECT token_sha256 FROM portal_tokens WHERE message_id = ?",
                      (ctx.id,)).fetchall()
    assert {r[0] for r in rows} == {hash_token(t) for t in tokens}
    db.close()
    raw_db = b"".join(p.read_bytes() for p in (tmp_path / "var").glob("mailmoat.sqlite3*"))
    for token in tokens:
        assert token.encode() not in raw_db


def test_danger_file_is_deleted_not_stored_and_the_notice_says_so(runtime) -> None:
    ctx = analyse(runtime, message(("eicar.com.txt", EICAR_LIKE, "text/plain"),
                                   ("clean.pdf", clean_pdf(), "application/pdf")))
    danger = next(a for a in ctx.attachments if a.filename == "eicar.com.txt")
    assert danger.verdict == "danger" and "VIRUS" in danger.symbols and danger.action == "delete"
    out = ctx.outputs["alice@example.test"]
    assert EICAR_LIKE not in out
    assert [n for _, n, _ in parts(out) if n] == ["clean.pdf"]
    plain = text_of(out, "text/plain")
    assert "危険と判定されたため削除されました" in plain and "eicar.com.txt (ウイルスを検出)" in plain
    assert "以下のURLから確認してください" not in plain  # nothing was kept for the portal
    [record] = runtime.services.isolation.files(ctx.id)
    assert record.action == "delete" and record.blob_key is None
    assert not list(runtime.services.blobs.keys(f"isolated/{ctx.id}/"))


def test_english_tenant_gets_the_english_notice(tmp_path: Path) -> None:
    config = tmp_path / "en.toml"
    config.write_text(Path(__file__).resolve().parents[3].joinpath("config/demo.toml").read_text()
                      .replace('language = "ja"', 'language = "en"')
                      .replace("retention_days = 30", "retention_days = 7"))
    runtime = make_runtime(tmp_path / "var", config=config)
    ctx = analyse(runtime, message(("a.zip", aes_zip({"a.txt": b"x"}), "application/zip"),
                                   html=False))
    plain = text_of(ctx.outputs["alice@example.test"], "text/plain")
    assert "separated from this message by security policy" in plain
    assert "valid for 7 days" in plain
    [record] = runtime.services.isolation.files(ctx.id)
    assert timedelta(days=6) < record.expires_at - datetime.now(UTC) <= timedelta(days=7)


def test_a_message_that_is_only_the_file_becomes_the_notice(runtime) -> None:
    raw = (b"From: s@sender.example\r\nTo: alice@example.test\r\nSubject: x\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: application/zip; name=\"a.zip\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n"
           + __import__("base64").encodebytes(aes_zip({"a.txt": b"x"})).replace(b"\n", b"\r\n"))
    ctx = analyse(runtime, raw, ["alice@example.test"])
    out = ctx.outputs["alice@example.test"]
    [(ctype, name, _)] = parts(out)
    assert ctype == "text/plain" and name is None
    assert "分離されました" in text_of(out, "text/plain")


def test_signed_smime_is_never_touched(runtime) -> None:
    raw = (b"From: s@sender.example\r\nTo: alice@example.test\r\nSubject: signed\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\";"
           b" micalg=sha-256; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n"
           b"--b2\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b2\r\nContent-Type: application/x-msdownload\r\n"
           b"Content-Disposition: attachment; filename=\"a.exe\"\r\n\r\nMZ\r\n--b2--\r\n--b1\r\n"
           b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n\r\nsig\r\n--b1--\r\n")
    ctx = analyse(runtime, raw, ["alice@example.test"])
    assert ctx.attachments == [] and ctx.outputs == {} and ctx.portal_url is None
    assert b"a.exe" in (ctx.output or raw)


def test_attached_message_with_a_risky_file_leaves_whole(runtime) -> None:
    inner = message(("a.zip", aes_zip({"a.txt": b"x"}), "application/zip"), html=False)
    outer = message(html=False)
    msg = message_from_bytes(outer, policy=policy.default)
    msg.make_mixed()
    from email.message import EmailMessage

    part = EmailMessage()
    part.set_content(message_from_bytes(inner, policy=policy.default))
    part["Content-Disposition"] = "attachment"
    msg.attach(part)
    ctx = analyse(runtime, msg.as_bytes(), ["alice@example.test"])
    actions = {a.path: a.action for a in ctx.attachments}
    assert actions == {"2": "isolate", "2.2": "isolate"}
    out = ctx.outputs["alice@example.test"]
    assert all(c != "message/rfc822" for c, _, _ in parts(out))
    assert {f.path for f in runtime.services.isolation.files(ctx.id)} == {"2", "2.2"}


def test_rerun_keeps_the_link_of_a_recipient_already_delivered(runtime) -> None:
    raw = message(("a.zip", aes_zip({"a.txt": b"x"}), "application/zip"))
    first = analyse(runtime, raw)
    token = TOKEN_URL.findall(text_of(first.outputs["alice@example.test"], "text/plain"))[0]
    runtime.services.log.finish_delivery(first.id, "alice@example.test", "delivered: test")
    again = analyse(runtime, raw, message_id=first.id)
    store = runtime.services.isolation
    assert resolve(store, token, datetime.now(UTC)) is not None
    assert set(again.outputs) == {"bob@example.test"}


def test_sweep_removes_expired_files_records_and_tokens(runtime) -> None:
    ctx = analyse(runtime, message(("a.zip", aes_zip({"a.txt": b"x"}), "application/zip")))
    token = TOKEN_URL.findall(text_of(ctx.outputs["alice@example.test"], "text/plain"))[0]
    store = runtime.services.isolation
    blobs = runtime.services.blobs
    assert sweep(store, blobs, datetime.now(UTC)) == 0
    assert resolve(store, token, datetime.now(UTC)) is not None
    later = datetime.now(UTC) + timedelta(days=31)
    assert resolve(store, token, later) is None  # expired tokens resolve to nothing
    assert sweep(store, blobs, later) == 1
    assert store.files(ctx.id) == [] and store.message(ctx.id) is None
    assert not list(blobs.keys(f"isolated/{ctx.id}/"))
    assert resolve(store, token, datetime.now(UTC)) is None


def test_a_file_that_cannot_be_removed_quarantines_the_message(runtime) -> None:
    from mailmoat.context import AttachmentReport, MessageContext, Verdict
    from mailmoat.pipeline import run_pipeline

    ctx = MessageContext(id="t-missing", raw=b"From: a@b\r\n\r\nhi\r\n")
    ctx.attachments.append(AttachmentReport(path="2", filename="a.exe", declared_type="x/y",
                                            size=1, sha256="0", verdict=Verdict.RISKY))
    run_pipeline(ctx, runtime.services, ("isolate",))
    assert ctx.disposition == Disposition.QUARANTINE and ctx.has("ISOLATION_UNAVAILABLE")


# --- through the gateway path (accept → process_stored → Maildir) ------------------------------

def _delivered(runtime, rcpt: str) -> bytes:
    user = rcpt.split("@")[0]
    files = [p for p in (runtime.settings.data_dir / "maildir").rglob("*")
             if p.is_file() and "/new/" in p.as_posix() and user in p.as_posix()]
    assert len(files) == 1, files
    return files[0].read_bytes()


def _accepted(runtime):
    from mailmoat.context import Envelope

    zip_bytes = aes_zip({"report.txt": b"member bytes\n"})
    raw = message(("請求書.zip", zip_bytes, "application/zip"), ("clean.pdf", clean_pdf(), "application/pdf"))
    message_id = runtime.accept(raw, Envelope(client_ip="203.0.113.5", helo="mx.sender.example",
                                              mail_from="sender@sender.example", rcpt_to=RECIPIENTS))
    ctx = runtime.process_stored(message_id)
    assert ctx is not None
    return ctx


def test_gateway_delivers_the_notice_and_keeps_the_pdf(runtime) -> None:
    ctx = _accepted(runtime)
    assert runtime.services.log.get(ctx.id).state == "delivered"
    out = _delivered(runtime, "alice@example.test")
    assert [n for _, n, _ in parts(out) if n] == ["clean.pdf"]
    plain = text_of(out, "text/plain")
    assert "分離されました" in plain and "請求書.zip" in plain
    token = TOKEN_URL.findall(plain)[0]
    access = resolve(runtime.services.isolation, token, datetime.now(UTC))
    assert access is not None and access.message_id == ctx.id
    assert b"ARC-Seal:" in out  # the rewrite stage sealed what was delivered


def test_gateway_gives_each_recipient_their_own_link(runtime) -> None:
    _accepted(runtime)
    links = {r: TOKEN_URL.findall(text_of(_delivered(runtime, r), "text/plain"))[0] for r in RECIPIENTS}
    store = runtime.services.isolation
    for rcpt, token in links.items():
        access = resolve(store, token, datetime.now(UTC))
        assert access is not None and access.recipient == rcpt


def test_no_token_in_the_message_log(runtime, tmp_path: Path) -> None:
    ctx = _accepted(runtime)
    token = ctx.portal_url.rsplit("/", 1)[1]
    raw_db = b"".join(p.read_bytes() for p in (tmp_path / "var").glob("mailmoat.sqlite3*"))
    assert token.encode() not in raw_db


def test_portal_link_stays_clickable_in_unauthenticated_mail(tmp_path: Path) -> None:
    import json

    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps({"sender.example": {"TXT": ["v=spf1 -all"]},
                                "_dmarc.sender.example": {"TXT": ["v=DMARC1; p=reject"]}}))
    runtime = make_runtime(tmp_path / "var", dns_zone=zone)
    from mailmoat.context import Envelope

    ctx = runtime.analyse(message(("a.zip", aes_zip({"a.txt": b"x"}), "application/zip")),
                          Envelope(client_ip="203.0.113.9", helo="x", mail_from="s@sender.example",
                                   rcpt_to=["alice@example.test"]),
                          stages=("authenticate", "scan", "isolate", "rewrite"))
    assert "defang" in ctx.actions and "isolate" in ctx.actions
    out = ctx.outputs.get("alice@example.test", ctx.output)
    assert TOKEN_URL.search(text_of(out, "text/plain"))
    assert re.search(r'<a href="http://127\.0\.0\.1:8080/m/[A-Za-z0-9_-]+"', text_of(out, "text/html"))


def test_a_convert_action_isolates_the_file_and_says_so(runtime, monkeypatch) -> None:
    from mailmoat.context import AttachmentAction
    from mailmoat.policy import decide as real_decide
    from mailmoat.stages import isolate as stage

    def decide(ctx, tenant) -> None:  # a custom rule ("convert-pdf") as policy would set it
        real_decide(ctx, tenant)
        for att in ctx.attachments:
            att.action = AttachmentAction.CONVERT

    monkeypatch.setattr(stage, "decide", decide)
    pdf = clean_pdf()
    ctx = analyse(runtime, message(("clean.pdf", pdf, "application/pdf")))
    assert ctx.has("CONVERT_UNAVAILABLE")
    assert [n for _, n, _ in parts(ctx.outputs["alice@example.test"]) if n] == []
    [record] = runtime.services.isolation.files(ctx.id)
    assert record.action == "isolate" and runtime.services.blobs.get(record.blob_key) == pdf


def _with_rule(runtime, action: str) -> None:
    from mailmoat.config import RuleConfig

    tenant = runtime.services.config.tenants[0]
    tenant.rules = [RuleConfig(name=f"rule-{action}", action=action)]  # type: ignore[arg-type]


def test_remove_macros_delivers_the_macro_free_copy_and_isolates_the_original(runtime) -> None:
    from mailmoat.scan.macros import vba_present
    from tests.unit.isolation.builders import vba_project_bin
    from tests.unit.scan.scanfiles import make_ooxml

    _with_rule(runtime, "remove-macros")
    docm = make_ooxml("word-macro", extra={"word/vbaProject.bin": vba_project_bin()})
    assert vba_present(docm)
    ctx = analyse(runtime, message(("見積.docm", docm, "application/octet-stream")))

    (att,) = ctx.attachments
    assert att.action == "convert" and ctx.has("MACROS_REMOVED") and not ctx.has("CONVERT_UNAVAILABLE")
    for rcpt, out in ctx.outputs.items():
        files = [(c, n, d) for c, n, d in parts(out) if n]
        ((ctype, name, data),) = files
        assert name == "見積.docx", rcpt
        assert ctype == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        assert not vba_present(data)
        assert "見積.docm → 見積.docx" in text_of(out, "text/plain")
        assert TOKEN_URL.search(text_of(out, "text/plain"))  # the original is one click away
    [record] = runtime.services.isolation.files(ctx.id)
    assert record.filename == "見積.docm" and runtime.services.blobs.get(record.blob_key) == docm


def test_remove_macros_on_a_file_without_macros_isolates_it_with_the_reason(runtime) -> None:
    _with_rule(runtime, "remove-macros")
    pdf = clean_pdf()
    ctx = analyse(runtime, message(("clean.pdf", pdf, "application/pdf")))
    assert ctx.has("CONVERT_UNAVAILABLE") and not ctx.has("MACROS_REMOVED")
    assert [n for _, n, _ in parts(ctx.outputs["alice@example.test"]) if n] == []


def test_a_long_japanese_name_is_written_as_rfc2231_continuations() -> None:
    from email.message import EmailMessage

    from mailmoat.stages.isolate import _Converted, _replace_file

    name = "令和八年度第三四半期営業報告書（関東支社・最終版・社外秘）マクロ付き様式.docx"
    node = EmailMessage()
    node.set_content(b"x", maintype="application", subtype="octet-stream", filename="a.docm")
    _replace_file(node, _Converted(b"PK-data", name, "application/vnd.openxmlformats-"
                                   "officedocument.wordprocessingml.document"))
    raw = node.as_bytes(policy=policy.default.clone(refold_source="none"))  # as serialize_tree
    assert max(len(line) for line in raw.split(b"\n")) < 100
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed.get_filename() == name and parsed.get_payload(decode=True) == b"PK-data"
    assert parsed.get_content_type().endswith("wordprocessingml.document")
