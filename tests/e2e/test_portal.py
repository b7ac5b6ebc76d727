"""The recipient portal (DESIGN §6, §7; issue 5) through FastAPI's TestClient on a real store."""

from __future__ import annotations

import io
import re
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mailmoat.context import MessageContext
from mailmoat.isolation import IsolatedFile, PortalMessage, issue_token
from mailmoat.runtime import Runtime
from mailmoat.scan.macros import vba_present
from mailmoat.services.downloads import content_disposition
from mailmoat_web.app import create_app
from tests.unit.isolation.builders import (
    EICAR_LIKE,
    PASSWORD,
    XSS,
    aes_zip,
    analyse,
    clean_pdf,
    make_runtime,
    message,
    vba_project_bin,
)
from tests.unit.scan.scanfiles import encrypt_ooxml, make_ooxml
from tests.webforms import form_csrf

TOKEN_URL = re.compile(r"http://127\.0\.0\.1:8080/m/([A-Za-z0-9_-]+)")
MEMBERS = {"report.txt": b"member bytes\n", "data/table.csv": b"a,b\n1,2\n"}


def token_for(ctx: MessageContext, rcpt: str = "alice@example.test") -> str:
    msg = message_from_bytes(ctx.outputs[rcpt], policy=policy.default)
    for node in msg.walk():
        if node.get_content_type() == "text/plain":
            return TOKEN_URL.findall(str(node.get_content()))[0]
    raise AssertionError("no notice")


def article(html: str, filename: str) -> str:
    """The <article> of one file on the page."""
    for block in re.findall(r"<article.*?</article>", html, flags=re.S):
        if f'<span class="name">{filename}</span>' in block:
            return block
    raise AssertionError(f"{filename} not on the page")


@dataclass
class Portal:
    runtime: Runtime
    client: TestClient
    ctx: MessageContext
    token: str

    def page(self, **kwargs: object) -> str:
        response = self.client.get(f"/m/{self.token}", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text
        return response.text

    @property
    def csrf(self) -> str:
        html = self.page()
        if 'name="csrf"' not in html:  # nothing to post on this message page: any page's token
            html = self.client.get("/k", follow_redirects=True).text  # (no session to bind to)
        return form_csrf(html)

    def post(self, path: str, what: str, **form: object) -> object:
        data = {"csrf": self.csrf, **{k: str(v) for k, v in form.items()}}
        return self.client.post(f"/m/{self.token}/f/{path}/{what}", data=data)


def open_portal(runtime: Runtime, raw: bytes) -> Portal:
    ctx = analyse(runtime, raw)
    return Portal(runtime, TestClient(create_app(runtime)), ctx, token_for(ctx))


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return make_runtime(tmp_path / "var")


@pytest.fixture
def portal(runtime: Runtime) -> Portal:
    return open_portal(runtime, message(("請求書.zip", aes_zip(MEMBERS), "application/zip"),
                                        ("clean.pdf", clean_pdf(), "application/pdf")))


def path_of(p: Portal, filename: str) -> str:
    return next(a.path for a in p.ctx.attachments if a.filename == filename)


# --- the page --------------------------------------------------------------------------------

def test_page_shows_the_message_and_the_encrypted_zip_with_a_password_form(portal: Portal) -> None:
    response = portal.client.get(f"/m/{portal.token}", headers={"Accept-Language": "ja"})
    assert response.status_code == 200
    html = response.text
    assert "請求書の送付" in html and "sender@sender.example" in html
    block = article(html, "請求書.zip")
    assert "暗号化" in block and 'type="password"' in block
    assert "パスワード付きの圧縮ファイルのため" in block  # the reason in words, not the symbol
    assert "ENCRYPTED_ARCHIVE" not in block
    assert "clean.pdf" not in html  # kept in the message, not isolated
    csp = response.headers["content-security-policy"]
    assert "script-src" not in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in html and "style=" not in html
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "mm_csrf" in response.cookies
    css = portal.client.get("/static/portal.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_language_follows_accept_language_switch_and_cookie(portal: Portal) -> None:
    assert "Isolated attachments" in portal.page(headers={"Accept-Language": "en-US,en;q=0.9"})
    assert "隔離された添付ファイル" in portal.page(headers={"Accept-Language": "ja,en;q=0.5"})
    switched = portal.client.get(f"/m/{portal.token}?lang=en", headers={"Accept-Language": "ja"})
    assert "It is a password-protected archive" in switched.text
    assert portal.client.cookies.get("mm_lang") == "en"
    assert "Isolated attachments" in portal.page(headers={"Accept-Language": "ja"})  # cookie wins


def test_unknown_and_expired_tokens_get_the_same_404(portal: Portal) -> None:
    unknown = portal.client.get("/m/" + "A" * 32)
    portal.runtime.services.clock = _Later(timedelta(days=31))  # type: ignore[assignment]
    expired = portal.client.get(f"/m/{portal.token}")
    assert unknown.status_code == expired.status_code == 404
    assert unknown.text == expired.text
    assert portal.client.get("/m/").status_code == 404


class _Later:
    def __init__(self, delta: timedelta) -> None:
        self.delta = delta

    def now(self) -> datetime:
        return datetime.now(UTC) + self.delta


def test_route_hops_show_flags_and_warn_when_countries_differ(runtime: Runtime) -> None:
    store = runtime.services.isolation
    now = datetime.now(UTC)
    store.save(PortalMessage(id="m-route", tenant="example.test", language="en", from_header="a@b",
                             subject="s", date=None, mail_from=None, created_at=now,
                             expires_at=now + timedelta(days=1),
                             route=[{"ip": "203.0.113.5", "country": "JP", "from": "mx.jp"},
                                    {"ip": "198.51.100.7", "country": "US", "from": "relay.us"}]), [])
    token = issue_token(store, "m-route", "alice@example.test", now + timedelta(days=1))
    html = TestClient(create_app(runtime)).get(f"/m/{token}?lang=en").text
    assert "\U0001F1EF\U0001F1F5" in html and "\U0001F1FA\U0001F1F8" in html
    assert "crossed several countries" in html and "JP, US" in html


# --- passwords -------------------------------------------------------------------------------

def test_wrong_password_is_refused(portal: Portal) -> None:
    response = portal.post(path_of(portal, "請求書.zip"), "unlock", password="wrong")
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert "パスワードが違います" in response.text  # type: ignore[attr-defined]
    assert "report.txt" not in response.text  # type: ignore[attr-defined]


def test_right_password_lists_members_and_download_equals_the_member(portal: Portal) -> None:
    path = path_of(portal, "請求書.zip")
    response = portal.post(path, "unlock", password=PASSWORD)
    assert response.status_code == 200  # type: ignore[attr-defined]
    html = response.text  # type: ignore[attr-defined]
    assert "内容を再検査しました" in html
    for name in MEMBERS:
        assert name in html
    names = re.findall(r'<li class="member verdict-(\w+)">\s*<span class="name">([^<]+)</span>', html)
    assert names == [("safe", "report.txt"), ("safe", "data/table.csv")]
    for index, (name, data) in enumerate(MEMBERS.items()):
        got = portal.post(path, "member", password=PASSWORD, index=index)
        assert got.status_code == 200  # type: ignore[attr-defined]
        assert got.content == data  # type: ignore[attr-defined]
        assert got.headers["content-type"] == "application/octet-stream"  # type: ignore[attr-defined]
        expected = name.rsplit("/", 1)[-1]
        assert f"filename*=UTF-8''{expected}" in got.headers["content-disposition"]  # type: ignore[attr-defined]
    downloads = portal.runtime.services.isolation.downloads(portal.ctx.id)
    assert [d.kind for d in downloads] == ["member:report.txt", "member:data/table.csv"]
    assert all(d.client_ip == "testclient" and d.recipient == "alice@example.test" for d in downloads)


def test_password_attempts_are_rate_limited_per_file(portal: Portal) -> None:
    path = path_of(portal, "請求書.zip")
    for _ in range(5):
        assert portal.post(path, "unlock", password="nope").status_code == 400  # type: ignore[attr-defined]
    limited = portal.post(path, "unlock", password=PASSWORD)
    assert limited.status_code == 429  # type: ignore[attr-defined]
    assert "上限" in limited.text and "report.txt" not in limited.text  # type: ignore[attr-defined]
    assert portal.post(path, "member", password=PASSWORD, index=0).status_code == 429  # type: ignore[attr-defined]


def test_password_is_not_stored(portal: Portal, tmp_path: Path) -> None:
    path = path_of(portal, "請求書.zip")
    portal.post(path, "unlock", password="wrong-guess-xyz")
    portal.post(path, "unlock", password=PASSWORD)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "var").rglob("*") if p.is_file())
    assert b"wrong-guess-xyz" not in stored


@pytest.mark.parametrize("kind", ["office", "pdf", "7z"])
def test_other_encrypted_formats_decrypt_and_get_a_new_verdict(runtime: Runtime, kind: str) -> None:
    if kind == "office":
        plain = make_ooxml("word", padding=6000)
        data, name, ctype = encrypt_ooxml(plain, PASSWORD), "契約書.docx", "application/octet-stream"
    elif kind == "pdf":
        import pikepdf

        pdf = pikepdf.open(io.BytesIO(clean_pdf()))
        buf = io.BytesIO()
        pdf.save(buf, encryption=pikepdf.Encryption(user=PASSWORD, owner="owner-pw"))
        data, name, ctype = buf.getvalue(), "見積書.pdf", "application/pdf"
    else:
        import py7zr

        buf = io.BytesIO()
        with py7zr.SevenZipFile(buf, "w", password=PASSWORD) as archive:
            archive.writestr(b"seven bytes", "inner.txt")
        data, name, ctype = buf.getvalue(), "files.7z", "application/x-7z-compressed"
    p = open_portal(runtime, message((name, data, ctype)))
    att = next(a for a in p.ctx.attachments if a.filename == name)
    assert att.action == "isolate"
    if att.verdict != "encrypted":
        pytest.skip(f"scanner gives {att.verdict} for {kind}; no password form expected")
    assert p.post(att.path, "unlock", password="wrong").status_code == 400  # type: ignore[attr-defined]
    ok = p.post(att.path, "unlock", password=PASSWORD)
    assert ok.status_code == 200, ok.text  # type: ignore[attr-defined]
    got = p.post(att.path, "member", password=PASSWORD, index=0)
    if kind == "7z":
        # An archive type (§8) stays risky inside? Its member is plain text: downloadable.
        assert got.content == b"seven bytes"  # type: ignore[attr-defined]
    elif kind == "office":
        assert got.content == plain  # type: ignore[attr-defined]
    else:
        import pikepdf

        assert len(pikepdf.open(io.BytesIO(got.content)).pages) == 1  # type: ignore[attr-defined]


def test_unsupported_is_told_apart_from_a_wrong_password() -> None:
    from mailmoat.services.unlock import Unsupported, WrongPassword, decrypt
    from mailmoat.settings import Limits

    with pytest.raises(Unsupported):
        decrypt(b"\x00not a known container", "application/octet-stream", "x", Limits())
    with pytest.raises(WrongPassword):
        decrypt(aes_zip({"a": b"b"}), "application/zip", "wrong", Limits())


# --- the second look: the scan stage's engine, sandbox included ------------------------------

class RecordingSandbox:
    """A detonation service that calls everything malicious and keeps what it was given."""

    def __init__(self) -> None:
        self.submitted: list[tuple[bytes, str | None]] = []

    def submit(self, data: bytes, filename: str | None) -> str:
        self.submitted.append((data, filename))
        return f"ticket-{len(self.submitted)}"

    def poll(self, ticket: str) -> str:
        return "malicious"


def portal_with_sandbox(runtime: Runtime, raw: bytes) -> tuple[Portal, RecordingSandbox]:
    """Scanned without a sandbox; then the services the portal uses get one, on for every
    downloadable verdict, so only the portal's own re-scan can reach it."""
    from mailmoat.scan.sandbox import SandboxConfig

    ctx = analyse(runtime, raw)
    box = RecordingSandbox()
    runtime.services.sandbox = box
    runtime.services.sandbox_config = SandboxConfig(enabled=True, verdicts=frozenset({"safe", "risky"}))
    return Portal(runtime, TestClient(create_app(runtime)), ctx, token_for(ctx)), box


def test_unlocked_members_are_rescanned_with_the_sandbox(runtime: Runtime) -> None:
    p, box = portal_with_sandbox(runtime, message(("請求書.zip", aes_zip(MEMBERS), "application/zip")))
    path = path_of(p, "請求書.zip")
    html = p.post(path, "unlock", password=PASSWORD).text  # type: ignore[attr-defined]
    assert sorted(box.submitted) == sorted((data, name.rsplit("/", 1)[-1]) for name, data in MEMBERS.items())
    assert re.findall(r'<li class="member verdict-(\w+)">', html) == ["danger", "danger"]
    assert p.post(path, "member", password=PASSWORD, index=0, confirm="1").status_code == 403  # type: ignore[attr-defined]


def test_a_safe_copy_is_rescanned_with_the_sandbox(runtime: Runtime) -> None:
    p, box = portal_with_sandbox(runtime, message(("active.pdf", active_pdf(), "application/pdf")))
    refused = p.post(path_of(p, "active.pdf"), "download", kind="safe")
    assert refused.status_code == 403  # type: ignore[attr-defined]
    assert [name for _data, name in box.submitted] == ["active.pdf"]
    assert runtime.services.isolation.downloads(p.ctx.id) == []


# --- what each verdict allows ------------------------------------------------------------------

def test_danger_and_velvetsweatshop_show_no_download_control(runtime: Runtime) -> None:
    velvet = encrypt_ooxml(make_ooxml("excel", padding=6000), "VelvetSweatshop")
    p = open_portal(runtime, message(("invoice.xlsx", velvet, "application/octet-stream"),
                                     ("eicar.com", EICAR_LIKE, "application/octet-stream")))
    html = p.page()
    for name in ("invoice.xlsx", "eicar.com"):
        block = article(html, name)
        assert "badge-danger" in block
        assert "<form" not in block and "<button" not in block and "download" not in block.lower()
    assert "ウイルス対策エンジンがマルウェアを検出しました" in article(html, "eicar.com")
    assert "既知の手口" in article(html, "invoice.xlsx")
    for name in ("invoice.xlsx", "eicar.com"):
        for kind in ("original", "macro-removed"):
            refused = p.post(path_of(p, name), "download", kind=kind, confirm="1")
            assert refused.status_code in (403, 404)  # type: ignore[attr-defined]
            assert refused.headers["content-type"].startswith("text/html")  # type: ignore[attr-defined]


def test_docm_offers_a_macro_removed_copy_without_vba(runtime: Runtime) -> None:
    from oletools.olevba import VBA_Parser

    rels = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="'
            b'http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId9" '
            b'Type="http://schemas.microsoft.com/office/2006/relationships/vbaProject" '
            b'Target="vbaProject.bin"/></Relationships>')
    docm = make_ooxml("word-macro", extra={"word/vbaProject.bin": vba_project_bin(),
                                           "word/_rels/document.xml.rels": rels})
    # Word declares the project's type by extension; the copy must lose that too.
    docm = _with_bin_default(docm)
    p = open_portal(runtime, message(("letter.docm", docm, "application/octet-stream")))
    block = article(p.page(), "letter.docm")
    assert "letter.docx" in block and 'value="macro-removed"' in block
    got = p.post(path_of(p, "letter.docm"), "download", kind="macro-removed")
    assert got.status_code == 200  # type: ignore[attr-defined]
    assert "filename*=UTF-8''letter.docx" in got.headers["content-disposition"]  # type: ignore[attr-defined]
    cleaned = got.content  # type: ignore[attr-defined]
    with zipfile.ZipFile(io.BytesIO(cleaned)) as zf:
        names = zf.namelist()
        types = zf.read("[Content_Types].xml").decode()
    assert not any("vba" in n.lower() for n in names)
    with zipfile.ZipFile(io.BytesIO(cleaned)) as zf:
        assert "vbaProject" not in zf.read("word/_rels/document.xml.rels").decode()
    assert "macroEnabled" not in types and "vbaProject" not in types
    assert "wordprocessingml.document.main+xml" in types
    assert vba_present(docm)  # oletools sees the project in the original …
    parser = VBA_Parser("letter.docx", data=cleaned)
    assert not parser.detect_vba_macros()  # … and none in the copy
    parser.close()


def _with_bin_default(docm: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docm)) as zin, zipfile.ZipFile(out, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "[Content_Types].xml":
                data = data.replace(b"<Default Extension=\"xml\"",
                                    b'<Default Extension="bin" ContentType='
                                    b'"application/vnd.ms-office.vbaProject"/><Default Extension="xml"')
            zout.writestr(name, data)
    return out.getvalue()


def test_risky_original_needs_the_warning_first(runtime: Runtime) -> None:
    p = open_portal(runtime, message(("tool.js", b"WScript.Echo(1)", "application/javascript")))
    path = path_of(p, "tool.js")
    first = p.post(path, "download", kind="original")
    assert first.status_code == 200 and "注意が必要なファイルです" in first.text  # type: ignore[attr-defined]
    assert 'name="confirm" value="1"' in first.text  # type: ignore[attr-defined]
    second = p.post(path, "download", kind="original", confirm="1")
    assert second.content == b"WScript.Echo(1)"  # type: ignore[attr-defined]
    assert [d.kind for d in runtime.services.isolation.downloads(p.ctx.id)] == ["original"]


def test_large_originals_go_by_presigned_url_when_the_store_offers_one(runtime: Runtime,
                                                                     monkeypatch) -> None:
    # On AWS the S3 store offers presigned_get; the app must redirect only after its checks.
    from mailmoat.services import downloads

    p = open_portal(runtime, message(("tool.js", b"WScript.Echo(1)", "application/javascript")))
    monkeypatch.setattr(downloads, "PRESIGN_ABOVE_BYTES", 0)
    monkeypatch.setattr(runtime.services.blobs, "presigned_get",
                        lambda key, expires_in, filename: f"https://s3.example/{key}?x={filename}",
                        raising=False)
    path = path_of(p, "tool.js")
    warning = p.post(path, "download", kind="original")  # risky: the warning still comes first
    assert warning.status_code == 200  # type: ignore[attr-defined]
    data = {"csrf": p.csrf, "kind": "original", "confirm": "1"}
    redirect = p.client.post(f"/m/{p.token}/f/{path}/download", data=data, follow_redirects=False)
    assert redirect.status_code == 303
    assert redirect.headers["location"].startswith("https://s3.example/isolated/")
    kinds = [d.kind for d in runtime.services.isolation.downloads(p.ctx.id)]
    assert kinds == ["original:presigned"]


# --- hostile input and CSRF ----------------------------------------------------------------

def test_filename_and_subject_markup_render_as_text(runtime: Runtime) -> None:
    p = open_portal(runtime, message((XSS, b"MZ\x90\x00", "application/octet-stream"), subject=XSS))
    html = p.page()
    assert "<img" not in html
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    assert html.count(escaped) >= 2  # the subject and the file name
    got = p.post(path_of(p, XSS), "download", kind="original", confirm="1")
    disposition = got.headers["content-disposition"]  # type: ignore[attr-defined]
    assert '"' not in disposition.split('filename="', 1)[1].split('";', 1)[0]
    assert "filename*=UTF-8''%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E" in disposition


def test_post_without_csrf_is_refused(portal: Portal) -> None:
    path = path_of(portal, "請求書.zip")
    portal.page()  # the browser holds the cookie; the attacker's form cannot send its value
    for form in ({"password": PASSWORD}, {"password": PASSWORD, "csrf": "forged"}):
        response = portal.client.post(f"/m/{portal.token}/f/{path}/unlock", data=form)
        assert response.status_code == 403
        assert "report.txt" not in response.text
    fresh = TestClient(create_app(portal.runtime))  # no cookie at all
    response = fresh.post(f"/m/{portal.token}/f/{path}/unlock",
                          data={"password": PASSWORD, "csrf": portal.csrf})
    assert response.status_code == 403


@pytest.mark.parametrize(("name", "fallback"), [
    ('a"; filename=evil.exe', "a__ filename=evil.exe"),
    ("請求書.zip", "___.zip"),
    ("x\r\nSet-Cookie: y", "xSet-Cookie: y"),
    ("../../etc/passwd", "passwd"),
])
def test_content_disposition_is_safe_for_any_name(name: str, fallback: str) -> None:
    value = content_disposition(name)
    assert value.startswith(f'attachment; filename="{fallback}"; filename*=UTF-8\'\'')
    assert "\r" not in value and "\n" not in value


# --- bench (issue 5 acceptance 5) --------------------------------------------------------------

def ten_file_portal(runtime: Runtime) -> tuple[TestClient, str]:
    """A portal page with ten files of every verdict (also used by `make bench`)."""
    store = runtime.services.isolation
    now = datetime.now(UTC)
    later = now + timedelta(days=30)
    files = [IsolatedFile(message_id="m-bench", path=str(i + 2), filename=f"ファイル{i}.zip", size=1000 + i,
                          sha256="0" * 64, declared_type="application/zip", detected_type="application/zip",
                          verdict=v, symbols=s, action="isolate", expires_at=later,
                          blob_key=f"isolated/m-bench/{i + 2}",
                          members=[{"name": f"m{j}.txt", "verdict": "safe", "symbols": []} for j in range(5)])
             for i, (v, s) in enumerate([("encrypted", ["ENCRYPTED_ARCHIVE"]), ("risky", ["MACRO"]),
                                         ("danger", ["VIRUS"]), ("safe", []), ("unsupported", ["X"])] * 2)]
    store.save(PortalMessage(id="m-bench", tenant="example.test", language="ja", from_header="a@b",
                             subject="bench", date=None, mail_from=None, created_at=now, expires_at=later,
                             route=[{"ip": "203.0.113.5", "country": "JP"}] * 3), files)
    token = issue_token(store, "m-bench", "alice@example.test", later)
    return TestClient(create_app(runtime)), token


def test_page_with_ten_files_lists_them_all(runtime: Runtime) -> None:
    # Render time is a benchmark figure (`make bench`: portal_10_files_median_ms), not a test.
    client, token = ten_file_portal(runtime)
    response = client.get(f"/m/{token}")
    assert response.status_code == 200
    assert response.text.count("<article") == 10


# --- housekeeping --------------------------------------------------------------------------

def test_the_portal_sweeps_expired_files_when_it_starts(portal: Portal) -> None:
    store = portal.runtime.services.isolation
    blobs = portal.runtime.services.blobs
    assert store.files(portal.ctx.id) and list(blobs.keys(f"isolated/{portal.ctx.id}/"))
    portal.runtime.services.clock = _Later(timedelta(days=31))  # type: ignore[assignment]
    with TestClient(create_app(portal.runtime)) as client:
        for _ in range(100):  # the sweep runs in a worker thread right after start-up
            if not store.files(portal.ctx.id):
                break
            time.sleep(0.02)
        assert client.get(f"/m/{portal.token}").status_code == 404
    assert store.files(portal.ctx.id) == [] and store.message(portal.ctx.id) is None
    assert not list(blobs.keys(f"isolated/{portal.ctx.id}/"))


def test_portal_url_can_be_redacted_for_the_message_log(portal: Portal) -> None:
    from mailmoat.isolation import redact_portal_url

    assert portal.ctx.portal_url is not None and portal.token in portal.ctx.portal_url
    assert redact_portal_url(portal.ctx.portal_url) == "http://127.0.0.1:8080/m/<redacted>"
    assert redact_portal_url(None) is None


# --- preview -----------------------------------------------------------------------------------

def test_preview_shows_pdf_pages_as_images_and_text_as_text(runtime: Runtime) -> None:
    import pikepdf

    pdf = pikepdf.open(io.BytesIO(clean_pdf()))
    pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert(1)"))
    buf = io.BytesIO()
    pdf.save(buf)
    p = open_portal(runtime, message(("active.pdf", buf.getvalue(), "application/pdf"),
                                     ("notes", f"{XSS}\nline two".encode(), "application/octet-stream")))
    html = p.page()
    block = article(html, "active.pdf")
    assert "badge-risky" in block and "/preview" in block
    shown = p.client.get(f"/m/{p.token}/f/{path_of(p, 'active.pdf')}/preview")
    assert shown.status_code == 200
    assert shown.text.count('src="data:image/png;base64,') == 1
    text = p.client.get(f"/m/{p.token}/f/{path_of(p, 'notes')}/preview")
    assert text.status_code == 200 and "<img src=x" not in text.text
    assert "&lt;img src=x onerror=alert(1)&gt;\nline two" in text.text


def test_no_preview_for_danger_or_encrypted(runtime: Runtime) -> None:
    p = open_portal(runtime, message(("eicar.com", EICAR_LIKE, "application/octet-stream"),
                                     ("a.zip", aes_zip(MEMBERS), "application/zip")))
    for name in ("eicar.com", "a.zip"):
        assert "/preview" not in article(p.page(), name)
        assert p.client.get(f"/m/{p.token}/f/{path_of(p, name)}/preview").status_code == 404


# --- safe copies -------------------------------------------------------------------------------

def active_pdf() -> bytes:
    """Two pages and JavaScript run on opening: risky, isolated, a safe copy is offered."""
    import pikepdf

    pdf = pikepdf.open(io.BytesIO(clean_pdf()))
    pdf.add_blank_page()
    pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert(1)"))
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


def test_safe_copy_of_an_active_pdf_is_rebuilt_from_its_pages(runtime: Runtime) -> None:
    import pikepdf

    from mailmoat.scan.engine import Engine
    from mailmoat.scan.lists import Lists

    buf = io.BytesIO(active_pdf())
    p = open_portal(runtime, message(("active.pdf", buf.getvalue(), "application/pdf")))
    path = path_of(p, "active.pdf")
    assert 'value="safe"' in article(p.page(), "active.pdf")
    got = p.post(path, "download", kind="safe")
    assert got.status_code == 200  # type: ignore[attr-defined]
    clean = got.content  # type: ignore[attr-defined]
    assert "filename*=UTF-8''active.pdf" in got.headers["content-disposition"]  # type: ignore[attr-defined]
    assert len(pikepdf.open(io.BytesIO(clean)).pages) == 2
    engine = Engine(runtime.services.settings.limits)
    before = engine.analyse(buf.getvalue(), "active.pdf", Lists())
    after = engine.analyse(clean, "active.pdf", Lists())
    assert before.verdict == "risky" and after.verdict == "safe", after.symbols
    assert b"JavaScript" not in clean


def test_safe_copy_of_an_image_drops_what_follows_the_picture(tmp_path: Path) -> None:
    from PIL import Image

    from tests.unit.isolation.builders import DEMO

    config = tmp_path / "all.toml"  # zero-trust tenant: every attachment goes to the portal
    config.write_text(DEMO.read_text().replace('isolation = "risky"', 'isolation = "all"'))
    runtime = make_runtime(tmp_path / "var", config=config)

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
    tainted = buf.getvalue() + b"PK\x03\x04 appended payload"
    p = open_portal(runtime, message(("photo.png", tainted, "image/png")))
    att = next(a for a in p.ctx.attachments if a.filename == "photo.png")
    assert att.action == "isolate"
    if att.verdict == "safe":  # a safe file downloads as is, and the safe copy is offered too
        assert 'value="original"' in article(p.page(), "photo.png")
    got = p.post(path_of(p, "photo.png"), "download", kind="safe")
    assert got.status_code == 200  # type: ignore[attr-defined]
    assert b"appended payload" not in got.content  # type: ignore[attr-defined]
    assert Image.open(io.BytesIO(got.content)).size == (40, 30)  # type: ignore[attr-defined]


def test_safe_copy_of_an_office_document_drops_macros_remote_template_and_dde(runtime: Runtime) -> None:
    dde = ('<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve">'
           ' DDEAUTO c:\\\\windows\\\\system32\\\\cmd.exe "/k calc.exe" </w:instrText></w:r>'
           '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p><w:p><w:r><w:t>Hello</w:t></w:r></w:p>')
    settings_rels = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="'
                     b'http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" '
                     b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
                     b'attachedTemplate" Target="http://203.0.113.9/t.dotm" TargetMode="External"/>'
                     b'</Relationships>')
    doc = make_ooxml("word-macro", body=dde, extra={"word/vbaProject.bin": vba_project_bin(),
                                                    "word/_rels/settings.xml.rels": settings_rels})
    p = open_portal(runtime, message(("order.docm", doc, "application/octet-stream")))
    att = next(a for a in p.ctx.attachments if a.filename == "order.docm")
    assert {"MACRO", "REMOTE_TEMPLATE", "DDE"} <= set(att.symbols), att.symbols
    assert 'value="safe"' in article(p.page(), "order.docm")
    got = p.post(att.path, "download", kind="safe")
    assert got.status_code == 200, got.text  # type: ignore[attr-defined]
    assert "filename*=UTF-8''order.docx" in got.headers["content-disposition"]  # type: ignore[attr-defined]
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:  # type: ignore[attr-defined]
        assert "External" not in zf.read("word/_rels/settings.xml.rels").decode()
        body = zf.read("word/document.xml").decode()
    assert "DDEAUTO" not in body and "Hello" in body
    assert not vba_present(got.content)  # type: ignore[attr-defined]
