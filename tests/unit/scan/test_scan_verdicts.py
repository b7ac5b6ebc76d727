"""DESIGN §4 as a table: each built file, attached to a message, gets its verdict, symbols and action."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pikepdf
import py7zr
import pytest
import pyzipper

from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig, TenantConfig
from mailmoat.context import Envelope
from mailmoat.settings import Settings
from tests.unit.scan.scanfiles import R, W, eml, encrypt_ooxml, make_ooxml, make_zip, only
from tests.unit.scan.vbafiles import (
    VELVET_XOR_VERIFIER,
    legacy_excel,
    legacy_word_with_macros,
    vba_project_bin,
)

MZ = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + \
    b"This program cannot be run in DOS mode.\r\r\n$" + b"\x00" * 128


# --- builders ------------------------------------------------------------------------------------

def aes_zip() -> bytes:
    buf = io.BytesIO()
    with pyzipper.AESZipFile(buf, "w", compression=pyzipper.ZIP_DEFLATED,
                             encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(b"secret")
        zf.writestr("invoice.pdf", b"%PDF-1.4 not really")
    return buf.getvalue()


def zipcrypto_zip(tmp: Path) -> bytes:
    if shutil.which("zip") is None:
        pytest.skip("the zip command (Debian package zip) is not installed")
    (tmp / "plain.txt").write_bytes(b"hello " * 100)
    subprocess.run(["zip", "-q", "-P", "secret", str(tmp / "out.zip"), "plain.txt"], cwd=tmp,
                   check=True)
    return (tmp / "out.zip").read_bytes()


def sevenzip(password: str | None = None, header: bool = False,
             members: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password, header_encryption=header) as z:
        for name, data in (members or {"readme.txt": b"hello 7z"}).items():
            z.writestr(data, name)
    return buf.getvalue()


def cp932_zip() -> bytes:
    """A member named 請求書.exe in CP932 without the UTF-8 flag, as Japanese Windows writes it.
    zipfile always writes UTF-8, so write an ASCII placeholder of the same length and patch it."""
    real = "請求書.exe".encode("cp932")
    placeholder = b"X" * (len(real) - 4) + b".exe"
    data = make_zip({placeholder.decode(): MZ})
    assert data.count(placeholder) == 2  # local header and central directory
    return data.replace(placeholder, real)


def pdf(action: str | None = None, *, user: str | None = None, owner: str | None = None,
        attach: tuple[str, bytes] | None = None) -> bytes:
    doc = pikepdf.new()
    doc.add_blank_page()
    if action == "js":
        doc.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.JavaScript,
                                                 JS=pikepdf.String("app.alert(1)"))
    elif action == "launch":
        doc.pages[0].obj.AA = pikepdf.Dictionary(O=pikepdf.Dictionary(
            S=pikepdf.Name.Launch, F=pikepdf.String("calc.exe")))
    elif action == "file-uri":
        annot = pikepdf.Dictionary(Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Link,
                                   Rect=[0, 0, 100, 100],
                                   A=pikepdf.Dictionary(S=pikepdf.Name.URI,
                                                        URI=pikepdf.String("file:///C:/x.exe")))
        doc.pages[0].obj.Annots = doc.make_indirect(pikepdf.Array([doc.make_indirect(annot)]))
    if attach:
        doc.attachments[attach[0]] = pikepdf.AttachedFileSpec(doc, attach[1], filename=attach[0])
    out = io.BytesIO()
    if user is not None or owner is not None:
        doc.save(out, encryption=pikepdf.Encryption(user=user or "", owner=owner or "o", R=6))
    else:
        doc.save(out)
    return out.getvalue()


DDE_BODY = ('<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve">'
            ' DDEAUTO c:\\\\windows\\\\system32\\\\cmd.exe "/k calc.exe" </w:instrText></w:r>'
            '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>')
REMOTE_TEMPLATE_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    f'<Relationship Id="rId1337" Type="{R}/attachedTemplate" '
    'Target="http://203.0.113.9/template.dotm" TargetMode="External"/></Relationships>').encode()
PROTECTED_SETTINGS = (f'<?xml version="1.0" encoding="UTF-8"?><w:settings xmlns:w="{W}">'
                      '<w:documentProtection w:edit="readOnly" w:enforcement="1"/>'
                      '</w:settings>').encode()
XLM_SHEET = (b'<?xml version="1.0" encoding="UTF-8"?><xm:macrosheet '
             b'xmlns:xm="http://schemas.microsoft.com/office/excel/2006/main"/>')


CASES: list[tuple[str, str, Callable[[Path], bytes], str, set[str], str]] = [
    # id, filename, builder, verdict, symbols, action
    ("plain-docx", "report.docx", lambda t: make_ooxml("word"), "safe", set(), "keep"),
    ("plain-xlsx", "sheet.xlsx", lambda t: make_ooxml("excel"), "safe", set(), "keep"),
    ("protected-docx-is-not-encryption", "ro.docx",
     lambda t: make_ooxml("word", extra={"word/settings.xml": PROTECTED_SETTINGS}), "safe", set(),
     "keep"),
    ("plain-zip", "docs.zip", lambda t: make_zip({"a.txt": b"hello"}), "safe", set(), "keep"),
    ("zip-with-exe", "docs.zip", lambda t: make_zip({"dir/setup.exe": MZ}), "risky",
     {"DANGEROUS_EXTENSION"}, "isolate"),
    ("zip-aes", "secret.zip", lambda t: aes_zip(), "encrypted", {"ENCRYPTED_ARCHIVE"}, "isolate"),
    ("zip-zipcrypto", "secret.zip", zipcrypto_zip, "encrypted", {"ENCRYPTED_ARCHIVE"}, "isolate"),
    ("zip-cp932-exe", "請求書.zip", lambda t: cp932_zip(), "risky", {"DANGEROUS_EXTENSION"},
     "isolate"),
    ("7z-plain", "a.7z", lambda t: sevenzip(), "risky", {"ARCHIVE_TYPE"}, "isolate"),
    ("7z-password", "a.7z", lambda t: sevenzip("secret"), "encrypted",
     {"ENCRYPTED_ARCHIVE", "ARCHIVE_TYPE"}, "isolate"),
    ("7z-header-encryption", "a.7z", lambda t: sevenzip("secret", header=True), "encrypted",
     {"ENCRYPTED_ARCHIVE"}, "isolate"),
    ("7z-with-vbs", "a.7z", lambda t: sevenzip(members={"run.vbs": b"MsgBox 1"}), "risky",
     {"ARCHIVE_TYPE", "DANGEROUS_EXTENSION"}, "isolate"),
    ("docx-encrypted", "secret.docx", lambda t: encrypt_ooxml(make_ooxml("word", padding=6000), "pw1234"),
     "encrypted", {"ENCRYPTED_OFFICE"}, "isolate"),
    ("xlsx-encrypted", "secret.xlsx", lambda t: encrypt_ooxml(make_ooxml("excel", padding=6000), "pw1234"),
     "encrypted", {"ENCRYPTED_OFFICE"}, "isolate"),
    ("xlsx-velvetsweatshop", "invoice.xlsx",
     lambda t: encrypt_ooxml(make_ooxml("excel", padding=6000), "VelvetSweatshop"), "danger", {"VELVETSWEATSHOP"},
     "delete"),
    ("xls-97-2003-plain", "old.xls", lambda t: legacy_excel(None), "safe", set(), "keep"),
    ("xls-97-2003-read-password", "old.xls", lambda t: legacy_excel(0x1111), "unsupported",
     {"ENCRYPTED_OFFICE", "ENCRYPTED_OFFICE_LEGACY"}, "isolate"),
    ("xls-97-2003-velvetsweatshop", "old.xls", lambda t: legacy_excel(VELVET_XOR_VERIFIER),
     "danger", {"VELVETSWEATSHOP"}, "delete"),
    ("xlsm-xlm-macro-sheet", "book.xlsm",
     lambda t: make_ooxml("excel-macro", extra={"xl/macrosheets/sheet1.xml": XLM_SHEET}), "risky",
     {"MACRO", "XLM_MACRO"}, "isolate"),
    ("docm-autoopen-vba", "letter.docm",
     lambda t: make_ooxml("word-macro", extra={"word/vbaProject.bin": vba_project_bin()}), "risky",
     {"MACRO", "MACRO_AUTOEXEC", "MACRO_SUSPICIOUS"}, "isolate"),
    ("docm-harmless-vba", "letter.docm",
     lambda t: make_ooxml("word-macro", extra={"word/vbaProject.bin": vba_project_bin(
         'Attribute VB_Name = "Module1"\r\nFunction Twice(x)\r\n    Twice = 2 * x\r\nEnd Function\r\n')}),
     "risky", {"MACRO"}, "isolate"),
    ("doc-97-2003-autoopen-vba", "old.doc", lambda t: legacy_word_with_macros(), "risky",
     {"MACRO", "MACRO_AUTOEXEC"}, "isolate"),
    ("docm-unparseable-vba-project", "letter.docm",
     lambda t: make_ooxml("word-macro", extra={"word/vbaProject.bin": b"\xd0\xcf\x11\xe0junk"}),
     "risky", {"MACRO"}, "isolate"),
    ("docx-dde", "dde.docx", lambda t: make_ooxml("word", body=DDE_BODY), "risky", {"DDE"},
     "isolate"),
    ("docx-remote-template", "cv.docx",
     lambda t: make_ooxml("word", extra={"word/_rels/settings.xml.rels": REMOTE_TEMPLATE_RELS}),
     "risky", {"REMOTE_TEMPLATE"}, "isolate"),
    ("pdf-plain", "a.pdf", lambda t: pdf(), "safe", set(), "keep"),
    ("pdf-javascript", "a.pdf", lambda t: pdf("js"), "risky",
     {"PDF_ACTIVE_CONTENT", "PDF_JAVASCRIPT", "PDF_OPENACTION"}, "isolate"),
    ("pdf-launch", "a.pdf", lambda t: pdf("launch"), "risky",
     {"PDF_ACTIVE_CONTENT", "PDF_LAUNCH", "PDF_AA"}, "isolate"),
    ("pdf-file-uri", "a.pdf", lambda t: pdf("file-uri"), "risky",
     {"PDF_ACTIVE_CONTENT", "PDF_FILE_URI"}, "isolate"),
    ("pdf-embedded-exe", "a.pdf", lambda t: pdf(attach=("payload.exe", MZ)), "risky",
     {"PDF_ACTIVE_CONTENT", "PDF_EMBEDDED_FILE", "DANGEROUS_EXTENSION"}, "isolate"),
    ("pdf-user-password", "a.pdf", lambda t: pdf(user="u"), "encrypted", {"ENCRYPTED_PDF"},
     "isolate"),
    ("pdf-owner-password-only", "a.pdf", lambda t: pdf(owner="o"), "safe", {"PDF_OWNER_PASSWORD"},
     "keep"),
    ("exe-renamed-xlsx", "invoice.xlsx", lambda t: MZ, "risky", {"EXT_MISMATCH"}, "isolate"),
    ("pdf-named-docx", "letter.docx", lambda t: pdf(), "risky", {"EXT_MISMATCH"}, "isolate"),
    ("exe", "setup.exe", lambda t: MZ, "risky", {"DANGEROUS_EXTENSION"}, "isolate"),
    ("no-extension", "README", lambda t: b"plain words", "risky", {"NO_EXTENSION"}, "isolate"),
    ("double-extension", "invoice.pdf.exe", lambda t: MZ, "risky",
     {"DOUBLE_EXTENSION", "DANGEROUS_EXTENSION"}, "isolate"),
    ("rlo", "invoice\u202efdp.exe", lambda t: MZ, "risky",
     {"FILENAME_RLO", "DANGEROUS_EXTENSION"}, "isolate"),
    ("trailing-dots", "invoice.exe. . ", lambda t: MZ, "risky",
     {"FILENAME_TRAILING_DOT", "DANGEROUS_EXTENSION"}, "isolate"),
    ("gz", "logs.tar.gz", lambda t: _targz({"x/run.js": b"WScript.Echo(1)"}), "risky",
     {"ARCHIVE_TYPE", "DANGEROUS_EXTENSION"}, "isolate"),
    ("plain-text", "notes.txt", lambda t: b"just text\n", "safe", set(), "keep"),
]


def _targz(members: dict[str, bytes]) -> bytes:
    import gzip
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


@pytest.mark.parametrize(("name", "builder", "verdict", "symbols", "action"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_attachment_verdicts(name, builder, verdict, symbols, action, analyse, tmp_path):
    report = analyse(eml((name, builder(tmp_path))))
    att = only(report)
    assert att["verdict"] == verdict, att
    assert symbols <= set(att["symbols"]), att
    if verdict == "safe":
        assert not set(att["symbols"]) - {"PDF_OWNER_PASSWORD"}, att
    assert att["action"] == action
    assert att["filename"] == name.rstrip(" ") or att["filename"].startswith(name[:6])
    assert len(att["sha256"]) == 64 and att["size"] > 0 and att["detected_type"]
    if action != "keep":
        assert "isolate" in report["actions"]


def test_cp932_member_name_is_decoded(analyse):
    att = only(analyse(eml(("請求書.zip", cp932_zip()))))
    assert [m["name"] for m in att["members"]] == ["請求書.exe"]
    assert att["members"][0]["verdict"] == "risky"
    assert att["members"][0]["symbols"] == ["DANGEROUS_EXTENSION"]


def test_members_carry_their_own_verdicts(analyse):
    inner = make_zip({"deep/tool.ps1": b"Write-Host 1"})
    outer = make_zip({"readme.txt": b"hi", "inner.zip": inner,
                      "secret.xlsx": encrypt_ooxml(make_ooxml("excel", padding=6000), "pw")})
    att = only(analyse(eml(("bundle.zip", outer))))
    members = {m["name"]: m for m in att["members"]}
    assert members["readme.txt"]["verdict"] == "safe"
    assert members["inner.zip!deep/tool.ps1"]["symbols"] == ["DANGEROUS_EXTENSION"]
    assert members["inner.zip"]["verdict"] == "risky"  # an archive is its worst member
    assert members["secret.xlsx"]["verdict"] == "encrypted"
    assert att["verdict"] == "encrypted"  # the worst member of all
    assert {"DANGEROUS_EXTENSION", "ENCRYPTED_OFFICE"} <= set(att["symbols"])


def test_encrypted_zip_names_its_algorithm(analyse):
    report = analyse(eml(("secret.zip", aes_zip())))
    details = [f["detail"] for f in report["findings"] if f["symbol"] == "ENCRYPTED_ARCHIVE"]
    assert details == ["AES-256"]


def test_harmless_macro_is_not_autoexec(analyse):
    source = 'Attribute VB_Name = "Module1"\r\nFunction Twice(x)\r\n    Twice = 2 * x\r\nEnd Function\r\n'
    doc = make_ooxml("word-macro", extra={"word/vbaProject.bin": vba_project_bin(source)})
    att = only(analyse(eml(("a.docm", doc))))
    assert att["symbols"] == ["MACRO"]


def test_velvetsweatshop_hiding_an_autoopen_macro(analyse):
    book = make_ooxml("excel-macro", extra={"xl/vbaProject.bin": vba_project_bin()}, padding=6000)
    att = only(analyse(eml(("invoice.xlsm", encrypt_ooxml(book, "VelvetSweatshop")))))
    assert att["verdict"] == "danger" and att["action"] == "delete"
    assert {"VELVETSWEATSHOP", "MACRO", "MACRO_AUTOEXEC"} <= set(att["symbols"])


def test_velvetsweatshop_still_reports_what_it_hides(analyse):
    hidden = make_ooxml("excel-macro", extra={"xl/macrosheets/sheet1.xml": XLM_SHEET}, padding=6000)
    att = only(analyse(eml(("invoice.xlsm", encrypt_ooxml(hidden, "VelvetSweatshop")))))
    assert att["verdict"] == "danger"
    assert {"VELVETSWEATSHOP", "XLM_MACRO"} <= set(att["symbols"])


def test_tenant_lists_override_the_shipped_defaults(tmp_path):
    tenant = TenantConfig(name="acme", domains=["example.test"], zip_is_archive_type=True,
                          dangerous_extensions_add=["xyz"], dangerous_extensions_remove=["js"])
    runtime = bootstrap(Settings(mode="test"), data_dir=tmp_path,
                        config=GatewayConfig(tenant=[tenant]))

    def att(name: str, data: bytes) -> dict:
        ctx = runtime.analyse(eml((name, data)), Envelope(), tenant="acme", stages=["scan"])
        return only(ctx.to_report())

    assert att("a.zip", make_zip({"a.txt": b"x"}))["symbols"] == ["ARCHIVE_TYPE"]
    assert att("data.xyz", b"whatever")["symbols"] == ["DANGEROUS_EXTENSION"]
    assert att("app.js", b"var a = 1;\n")["verdict"] == "safe"
    # the shipped lists are untouched for everyone else
    ctx = bootstrap(Settings(mode="test"), data_dir=tmp_path / "other").analyse(
        eml(("app.js", b"var a = 1;\n")), Envelope(), stages=["scan"])
    assert only(ctx.to_report())["symbols"] == ["DANGEROUS_EXTENSION"]


def test_findings_name_the_attachment_and_member(analyse):
    report = analyse(eml(("docs.zip", make_zip({"setup.exe": MZ}))))
    hits = [f for f in report["findings"] if f["symbol"] == "DANGEROUS_EXTENSION"]
    assert hits == [{"symbol": "DANGEROUS_EXTENSION", "target": "2:setup.exe", "detail": ".exe"}]


def test_no_antivirus_is_recorded_once(analyse):
    report = analyse(eml(("a.txt", b"x"), ("b.txt", b"y")))
    assert [f["symbol"] for f in report["findings"]].count("AV_DISABLED") == 1
    assert all("SCAN_FAILED" not in a["symbols"] for a in report["attachments"])
    assert analyse(eml())["findings"] == []  # no files, nothing to say


def test_results_are_cached_by_sha256(analyse):
    from mailmoat.scan.engine import CACHE

    data = make_zip({"a.txt": b"hello"})
    first = only(analyse(eml(("a.zip", data))))
    assert len(CACHE) == 1
    second = only(analyse(eml(("renamed.zip", data))))
    assert len(CACHE) == 1
    assert first["sha256"] == second["sha256"] and first["members"] == second["members"]
    # the name checks still run on the cached content
    assert only(analyse(eml(("renamed.exe", data))))["symbols"] == ["DANGEROUS_EXTENSION",
                                                                    "EXT_MISMATCH"]
