"""Issue 16 item 3: Excel 4.0 macros emulated by XLMMacroDeobfuscator (xls, xlsm, xlsb; in a child
process) and SYLK's formulas read: SANDBOX_XLM_EXEC / _URL / _AUTO with their IOCs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailmoat.scan import filetype as ft
from mailmoat.scan.result import FileResult
from mailmoat.scan.xlm import analyse_xlm
from mailmoat.settings import AnalysisSettings
from tests.detection.xlmfiles import (
    DOWNLOADER,
    GET_DOCUMENT,
    HARMLESS,
    SYLK,
    XLS_DOWNLOADER,
    XLSB_DOWNLOADER,
    XLSB_HARMLESS,
    ptgx_funcvar,
    ptgx_int,
    xls,
    xlsb,
    xlsm,
)
from tests.unit.scan.scanfiles import eml, only


def findings(report: dict, symbol: str) -> list[str]:
    return [f["detail"] for f in report["findings"] if f["symbol"] == symbol]


@pytest.mark.parametrize(("name", "data", "url"), [
    ("invoice.xlsm", xlsm(DOWNLOADER), "http://evil.example/p.exe"),
    ("invoice.xls", xls(XLS_DOWNLOADER), "http://evil.example/x.exe"),
    ("invoice.xlsb", xlsb(XLSB_DOWNLOADER), "http://evil.example/b.exe"),
    ("invoice.slk", SYLK, "https://evil.example/s.dll"),
], ids=["xlsm", "xls", "xlsb", "slk"])
def test_excel4_downloader_is_danger_with_its_iocs(analyse, name: str, data: bytes,
                                                   url: str) -> None:
    report = analyse(eml((name, data)))
    att = only(report)
    assert {"SANDBOX_XLM_EXEC", "SANDBOX_XLM_URL", "SANDBOX_XLM_AUTO"} <= set(att["symbols"]), att
    assert att["verdict"] == "danger", att
    assert "EXEC" in findings(report, "SANDBOX_XLM_EXEC")[0]
    assert url in findings(report, "SANDBOX_XLM_URL")[0]
    assert "auto_open" in findings(report, "SANDBOX_XLM_AUTO")[0].lower()


@pytest.mark.parametrize(("name", "data", "url"), [
    ("invoice.xlsm", xlsm(DOWNLOADER), "http://evil.example/p.exe"),
    ("invoice.xlsb", xlsb(XLSB_DOWNLOADER), "http://evil.example/b.exe"),
], ids=["xlsm", "xlsb"])
def test_the_url_is_the_emulated_one(analyse, name: str, data: bytes, url: str) -> None:
    # "http://"&"evil.example/..." is only a URL once the formula is evaluated.
    report = analyse(eml((name, data)))
    assert findings(report, "SANDBOX_XLM_URL") == [f"emulated: {url}"]
    assert "URLDOWNLOADTOFILEA" in findings(report, "SANDBOX_XLM_EXEC")[0]


def test_an_xlsb_sandbox_check_does_not_end_the_emulation(analyse) -> None:
    # GET.DOCUMENT(88) (the workbook's name) read an attribute XLSBWrapper never sets.
    data = xlsb([ptgx_int(88) + ptgx_funcvar(GET_DOCUMENT, 1), *XLSB_DOWNLOADER])
    report = analyse(eml(("invoice.xlsb", data)))
    assert findings(report, "SANDBOX_XLM_URL") == ["emulated: http://evil.example/b.exe"]
    assert only(report)["verdict"] == "danger"


def test_an_emulation_broken_off_at_an_error_is_scan_failed(analyse) -> None:
    # A token the formula parser refuses ends the interpreter's run quietly, before the CALL:
    # not reaching the downloader must not read as having found none.
    att = only(analyse(eml(("invoice.xlsb", xlsb([b"\x1a", *XLSB_DOWNLOADER])))))
    assert "SCAN_FAILED" in att["symbols"], att
    assert att["verdict"] != "safe", att


@pytest.mark.parametrize(("name", "data"), [
    ("book.xlsm", xlsm(HARMLESS, auto_open=False)),
    ("book.xlsm", xlsm(["SUM(1,2)"], macro_sheet=False)),
    ("book.xlsb", xlsb(XLSB_HARMLESS, auto_open=False)),
    ("book.xlsb", xlsb(XLSB_DOWNLOADER, auto_open=False)),  # never runs: nothing opens it
    ("book.xlsb", xlsb(XLSB_HARMLESS, macro_sheet=False)),
], ids=["harmless-macro-sheet", "plain-workbook", "xlsb-harmless-macro-sheet",
        "xlsb-macro-sheet-without-auto-open", "xlsb-plain-workbook"])
def test_harmless_workbooks_get_no_sandbox_finding(analyse, name: str, data: bytes) -> None:
    att = only(analyse(eml((name, data))))
    assert not [s for s in att["symbols"] if s.startswith("SANDBOX_")], att


def test_clean_sylk_gets_no_sandbox_finding(analyse) -> None:
    att = only(analyse(eml(("plain.slk", b"ID;P\r\nC;X1;Y1;K10\r\nC;X1;Y2;ESUM(R1C1)\r\nE\r\n"))))
    assert att["detected_type"] == "application/x-sylk"
    assert att["verdict"] == "safe", att


def test_mailmoat_process_json_shows_the_findings(tmp_path: Path) -> None:
    files = {"a.xlsm": xlsm(DOWNLOADER), "a.xls": xls(XLS_DOWNLOADER), "a.xlsb": xlsb(XLSB_DOWNLOADER),
             "a.slk": SYLK}
    paths = []
    for name, data in files.items():
        (tmp_path / f"{name}.eml").write_bytes(eml((name, data)))
        paths.append(str(tmp_path / f"{name}.eml"))
    out = subprocess.run([str(Path(sys.executable).with_name("mailmoat")), "process", "--json", *paths],
                         capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path)
    reports = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 4, out.stdout[:2000]
    for report in reports:
        assert {"SANDBOX_XLM_EXEC", "SANDBOX_XLM_URL"} <= set(only(report)["symbols"]), report
        assert "evil.example" in findings(report, "SANDBOX_XLM_URL")[0]


def test_a_hostile_workbook_ends_within_its_time_bound(monkeypatch) -> None:
    # 60,000 formulas that call each other in a loop: the child is killed at its deadline and
    # the file is SCAN_FAILED (fail closed), never a pass or a hang.
    formulas = [f"IF(TRUE,GOTO(A{i + 2}),0)" for i in range(60_000)] + ["GOTO(A1)"]
    data = xlsm(formulas)
    monkeypatch.setenv("MAILMOAT_XLM_TIMEOUT_SECONDS", "2")
    result = FileResult("application/vnd.ms-excel.sheet.macroEnabled.12")
    started = time.monotonic()
    analyse_xlm(data, result.detected_type, result, time.monotonic() + 30)
    assert time.monotonic() - started < 6
    assert [h.symbol for h in result.hits] in (["SCAN_FAILED"], ["SANDBOX_XLM_AUTO",
                                                                 "ARCHIVE_LIMIT"]), result.hits
    assert not result.cacheable


def test_no_time_left_is_scan_failed() -> None:
    result = FileResult("application/vnd.ms-excel")
    analyse_xlm(xls(XLS_DOWNLOADER), "application/vnd.ms-excel", result, time.monotonic(),
                AnalysisSettings())
    assert [h.symbol for h in result.hits] == ["SCAN_FAILED"]


def test_an_xlsb_is_typed_by_its_default_content_type() -> None:
    # Excel names an xlsb's workbook.bin through <Default Extension="bin">, with no Override.
    assert ft.detect_type(xlsb(XLSB_DOWNLOADER)) == ft.XLSB


def test_an_xlsb_auto_open_with_the_builtin_prefix_is_emulated(analyse) -> None:
    # Excel names the built-in as "_xlnm.Auto_Open"; XLSBWrapper matches auto_open names by
    # prefix and, unlike XLSMWrapper, keeps the "_xlnm." prefix.
    data = xlsb(XLSB_DOWNLOADER, name="_xlnm.Auto_Open")
    report = analyse(eml(("invoice.xlsb", data)))
    assert findings(report, "SANDBOX_XLM_URL") == ["emulated: http://evil.example/b.exe"]
    assert only(report)["verdict"] == "danger"
