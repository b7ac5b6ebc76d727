"""The pieces under the stage: lists, names, real types, verdict table, libarchive formats, sandbox."""

from __future__ import annotations

import io

import pytest

from mailmoat.config import TenantConfig
from mailmoat.context import Verdict
from mailmoat.scan import filetype
from mailmoat.scan.lists import DANGEROUS_EXTENSIONS, Lists
from mailmoat.scan.result import verdict_of
from mailmoat.scan.sandbox import SandboxConfig, consult
from tests.unit.scan.scanfiles import eml, make_ooxml, make_zip, only


def test_shipped_list_is_design_section_8():
    from pathlib import Path

    design = Path(__file__).resolve().parents[4] / "shared" / "DESIGN.md"
    if design.exists():  # the spec beside the repository, when it is there
        text = design.read_text(encoding="utf-8")
        block = text.split("Executable and script types, also inside unencrypted zips:")[1]
        assert set(block.split("\n\n")[0].split()) == DANGEROUS_EXTENSIONS
    assert len(DANGEROUS_EXTENSIONS) == 129
    assert {"exe", "js", "iso", "ex_", "printerexport", "xll"} <= DANGEROUS_EXTENSIONS
    assert "zip" not in DANGEROUS_EXTENSIONS and "pdf" not in DANGEROUS_EXTENSIONS


def test_archive_types_by_extension_or_real_type():
    lists = Lists()
    assert lists.archive_type("Z", None) == "z"
    assert lists.archive_type("tgz", None) == "gz"
    assert lists.archive_type("dat", "application/x-7z-compressed") == "7z"
    assert lists.archive_type("zip", "application/zip") is None
    assert Lists.for_tenant(TenantConfig(name="t", domains=[], zip_is_archive_type=True)) \
        .archive_type("zip", "application/zip") == "zip"


@pytest.mark.parametrize(("name", "ext"), [
    ("a.PDF", "pdf"), ("a.exe.", "exe"), ("a.exe . .", "exe"), ("noext", None), ("a.", None),
    ("invoice\u202efdp.exe", "exe"), ("ｓｅｔｕｐ.ｅｘｅ", "exe"), (None, None),
])
def test_extension_is_what_windows_acts_on(name, ext):
    assert filetype.extension(name) == ext


@pytest.mark.parametrize(("ext", "detected", "mismatch"), [
    ("xlsx", "application/x-dosexec", True),
    ("xlsx", filetype.XLSX, False),
    ("xlsx", filetype.OOXML_ENCRYPTED, False),
    ("pdf", "application/pdf", False),
    ("jpg", "image/png", True),
    ("txt", "text/plain", False),
    ("weird", "application/x-dosexec", True),  # an executable under an unknown extension
    ("weird", "application/pdf", False),
    ("pdf", "application/octet-stream", False),  # libmagic could not tell: no evidence
])
def test_mismatch_table(ext, detected, mismatch):
    assert filetype.mismatch(ext, detected) is mismatch


def test_ooxml_is_told_by_its_main_part_not_by_embedded_parts():
    embedded = {"[Content_Types].xml": (
        b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        b'<Default Extension="xlsx" ContentType="application/vnd.openxmlformats-officedocument.'
        b'spreadsheetml.sheet"/><Override PartName="/word/document.xml" ContentType="application/'
        b'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')}
    assert filetype.detect_type(make_zip(embedded)) == filetype.DOCX
    assert filetype.detect_type(make_ooxml("excel-macro")) == filetype.XLSM
    assert filetype.detect_type(make_zip({"mimetype": b"application/vnd.oasis.opendocument.text"})) \
        == "application/vnd.oasis.opendocument.text"
    assert filetype.detect_type(make_zip({"a.txt": b"x"})) == "application/zip"


@pytest.mark.parametrize(("symbols", "verdict"), [
    ([], Verdict.SAFE),
    (["PDF_OWNER_PASSWORD"], Verdict.SAFE),
    (["DANGEROUS_EXTENSION"], Verdict.RISKY),
    (["SOMETHING_NEW"], Verdict.RISKY),  # unknown symbols fail towards caution
    (["ENCRYPTED_ARCHIVE", "DANGEROUS_EXTENSION"], Verdict.ENCRYPTED),
    (["ENCRYPTED_OFFICE", "ENCRYPTED_OFFICE_LEGACY"], Verdict.UNSUPPORTED),
    (["ENCRYPTED_PDF", "VIRUS"], Verdict.DANGER),
    (["VELVETSWEATSHOP"], Verdict.DANGER),
    (["SCAN_FAILED"], Verdict.RISKY),
])
def test_verdict_table(symbols, verdict):
    assert verdict_of(symbols) == verdict


def test_libarchive_formats_are_walked(analyse):
    """cpio stands in for lzh/cab/iso here: libarchive reads them all through one path, and
    can write cpio in a test (nothing here can write lzh or rar)."""
    import libarchive

    buf = io.BytesIO()
    with libarchive.custom_writer(buf.write, "cpio") as archive:
        archive.add_file_from_memory("docs/run.bat", 9, b"echo pwnd")
        archive.add_file_from_memory("docs/readme.txt", 2, b"hi")
    att = only(analyse(eml(("bundle.cpio", buf.getvalue()))))
    members = {m["name"]: m for m in att["members"]}
    assert members["docs/run.bat"]["symbols"] == ["DANGEROUS_EXTENSION"]
    assert members["docs/readme.txt"]["verdict"] == "safe"
    assert att["verdict"] == "risky"


def test_libarchive_7z_writer_output_is_read_by_py7zr(analyse):
    import libarchive

    buf = io.BytesIO()
    with libarchive.custom_writer(buf.write, "7zip") as archive:
        archive.add_file_from_memory("x.hta", 5, b"<html")
    att = only(analyse(eml(("a.7z", buf.getvalue()))))
    assert {"ARCHIVE_TYPE", "DANGEROUS_EXTENSION"} <= set(att["symbols"])


class _Sandbox:
    def __init__(self, answers):
        self.answers = list(answers)
        self.submitted = 0

    def submit(self, data, filename):
        self.submitted += 1
        return "ticket-1"

    def poll(self, ticket):
        return self.answers.pop(0) if self.answers else None


def test_sandbox_is_off_by_default_and_bounded():
    assert SandboxConfig().enabled is False
    # wait_inline_seconds = timeout_seconds: the stage waits for the verdict (synchronous).
    config = SandboxConfig(enabled=True, timeout_seconds=10, poll_seconds=1, wait_inline_seconds=10)
    clock = iter(range(100))
    kwargs = {"sleep": lambda s: None, "monotonic": lambda: float(next(clock))}
    assert consult(_Sandbox([None, "malicious"]), b"x", "a", config, **kwargs) == \
        ("SANDBOX_MALICIOUS", "ticket-1")
    assert consult(_Sandbox(["clean"]), b"x", "a", config, **kwargs) is None
    assert consult(_Sandbox([]), b"x", "a", config, **kwargs)[0] == "SANDBOX_TIMEOUT"


def test_sandbox_without_a_verdict_inline_leaves_the_file_analysing():
    config = SandboxConfig(enabled=True, timeout_seconds=300, poll_seconds=1, wait_inline_seconds=3)
    clock = iter(range(100))
    slept: list[float] = []
    kwargs = {"sleep": slept.append, "monotonic": lambda: float(next(clock))}
    assert consult(_Sandbox([]), b"x", "a", config, **kwargs) == ("SANDBOX_ANALYSING", "ticket-1")
    assert sum(slept) <= 3  # the stage never waits past the inline wait
    assert consult(_Sandbox([None, "clean"]), b"x", "a", config, **kwargs) is None


def test_engine_consults_an_enabled_sandbox_for_risky_files_only():
    from mailmoat.scan.engine import Engine, ResultCache
    from mailmoat.settings import Limits

    box = _Sandbox(["malicious"])
    engine = Engine(Limits(), sandbox=box, sandbox_config=SandboxConfig(enabled=True),
                    cache=ResultCache())
    assert engine.analyse(b"plain", "a.txt", Lists()).verdict == Verdict.SAFE
    assert box.submitted == 0
    result = engine.analyse(b"MZ" + b"\0" * 100, "a.exe", Lists())
    assert box.submitted == 1 and result.verdict == Verdict.DANGER
    assert "SANDBOX_MALICIOUS" in result.symbols


def test_cache_is_bounded():
    from mailmoat.scan.engine import Engine, ResultCache
    from mailmoat.settings import Limits

    engine = Engine(Limits(), cache=ResultCache(maxsize=3))
    for i in range(10):
        engine.analyse(f"text {i}".encode(), "a.txt", Lists())
    assert len(engine.cache) == 3


def test_lzh_with_cp932_names(analyse):
    from tests.unit.scan.scanfiles import make_lzh

    data = make_lzh({"請求書.exe".encode("cp932"): b"MZ\x90\x00", b"readme.txt": b"hello"})
    att = only(analyse(eml(("書類.lzh", data))))
    assert att["detected_type"] == "application/x-lzh-compressed"
    members = {m["name"]: m for m in att["members"]}
    assert members["請求書.exe"]["symbols"] == ["DANGEROUS_EXTENSION"]
    assert members["readme.txt"]["verdict"] == "safe"
    assert {"ARCHIVE_TYPE", "DANGEROUS_EXTENSION"} <= set(att["symbols"])


@pytest.mark.parametrize(("encrypted", "verdict", "symbols"), [
    (False, "risky", {"ARCHIVE_TYPE", "DANGEROUS_EXTENSION"}),
    (True, "encrypted", {"ARCHIVE_TYPE", "ENCRYPTED_ARCHIVE"}),
])
def test_rar(analyse, encrypted, verdict, symbols):
    from tests.unit.scan.scanfiles import make_rar4

    data = make_rar4({"payload.exe": b"MZ\x90\x00", "a.txt": b"hi"}, encrypted=encrypted)
    att = only(analyse(eml(("invoice.rar", data))))
    assert att["verdict"] == verdict and symbols <= set(att["symbols"]), att
    names = {m["name"] for m in att["members"]}
    assert "payload.exe" in names


def test_scan_stage_import_leaves_heavy_analysers_for_first_use():
    """Heavy analysers load on first use (the import time itself is measured by `make bench`)."""
    import subprocess
    import sys

    code = ("import sys; import mailmoat.stages.scan; "
            "print(' '.join(m for m in ('oletools', 'pikepdf', 'py7zr', 'msoffcrypto', 'libarchive',"
            " 'rarfile', 'magic', 'lxml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_agile_password_derivation_runs_once_per_file_and_password(monkeypatch):
    """The VelvetSweatshop probe of an agile-encrypted file costs one 100k-round derivation,
    a second look at the same file none, and the verdicts stay what they were."""
    from msoffcrypto.method.ecma376_agile import ECMA376Agile

    from mailmoat.scan import office
    from mailmoat.scan.result import FileResult
    from tests.unit.scan.scanfiles import encrypt_ooxml, make_ooxml

    office._install_derivation_cache()
    assert ECMA376Agile._derive_iterated_hash_from_password is office._cached_derivation
    monkeypatch.setattr(office, "_derivations", type(office._derivations)())
    rounds: list[str] = []
    derive = office._agile_derive
    assert derive is not None

    def counting(*args):
        rounds.append(args[0])
        return derive(*args)

    monkeypatch.setattr(office, "_agile_derive", counting)
    plain = make_ooxml("excel", padding=6000)
    for password, symbol in (("pw1234", "ENCRYPTED_OFFICE"), ("VelvetSweatshop", "VELVETSWEATSHOP")):
        data = encrypt_ooxml(plain, password)
        office._derivations.clear()  # encrypting derived it too
        rounds.clear()
        for _ in range(2):
            result = FileResult(detected_type="application/x-ms-encrypted")
            office._ole_encryption(data, "application/x-ms-encrypted", result, None)
            assert symbol in {h.symbol for h in result.hits}
        assert rounds == ["VelvetSweatshop"]
