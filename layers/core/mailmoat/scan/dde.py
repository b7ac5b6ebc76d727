"""DDE outside OOXML packages (Word 97–2003, Word/Excel XML, CSV) and XLM macros in SYLK.

oletools' msodde reads every one of these formats; its dispatcher takes a path, so the file
is written to a private temporary file first (bounded in size)."""

from __future__ import annotations

import os
import re
import tempfile

from mailmoat.scan import filetype as ft
from mailmoat.scan.result import FileResult

MAX_TEXT_DOCUMENT = 16 * 1024 * 1024  # larger text files are not read as documents
SNIFF = 4096

# Roots of the XML documents Word and Excel open as documents (msodde's ooxml.get_type knows them).
_OFFICE_XML = re.compile(
    rb"<\?mso-application\s+progid=\"(Word|Excel)\.|<(pkg:)?package\b[^>]*schemas\.microsoft\.com/office/"
    rb"|<w:wordDocument\b|<(ss:)?Workbook\b[^>]*urn:schemas-microsoft-com:office:spreadsheet",
    re.IGNORECASE)
# A cell formula that starts a program through a DDE server: =cmd|' /C calc'!A0, @SUM(..)+cmd|…
_CSV_DDE_HINT = re.compile(rb"[=+\-@][^\n]{0,200}\|", re.IGNORECASE)
# SYLK cell formulas Excel runs as Excel 4.0 macro functions, macro sheet or not.
_SYLK_XLM_CALL = re.compile(
    rb"^C;[^\n]*?;E(?:[^\n]*?[^A-Za-z0-9_.])?(EXEC|CALL|REGISTER|RUN|FORMULA|HALT)\s*\(",
    re.IGNORECASE | re.MULTILINE)

_TEXT_TYPES = ("text/", "application/xml", "application/csv", "application/x-sylk")


def is_text_document(detected: str) -> bool:
    return detected.startswith(_TEXT_TYPES)


def analyse_text_document(data: bytes, result: FileResult) -> None:
    """Findings for a text file that Office would open as a document: SYLK's XLM macros, DDE in
    Word/Excel XML and in CSV cells."""
    if len(data) > MAX_TEXT_DOCUMENT:
        return
    if data.startswith(b"ID;"):
        _sylk(data, result)
        return
    head = data[:SNIFF]
    if _OFFICE_XML.search(head) or (b"<" in head[:200] and _OFFICE_XML.search(data[:SNIFF * 16])):
        _msodde(data, result, ".xml")
    elif _CSV_DDE_HINT.search(data):
        _msodde(data, result, ".csv")


def analyse_legacy(data: bytes, detected: str, result: FileResult) -> None:
    """DDE fields in an unencrypted Word 97–2003 file and DDE links in Excel 97–2003."""
    if detected == ft.DOC:
        import olefile
        from oletools import msodde

        try:
            with olefile.OleFileIO(data, path_encoding=None) as ole:
                fields = msodde.process_doc(ole)
        except Exception as exc:
            result.add("SCAN_FAILED", f"msodde: {type(exc).__name__}: {exc}"[:200])
            return
        _report(fields, result)
    elif detected == ft.XLS:
        _msodde(data, result, ".xls")


def _msodde(data: bytes, result: FileResult, suffix: str) -> None:

    fd, path = tempfile.mkstemp(prefix="mailmoat-dde-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        fields = _read_fields(path, suffix)
    except Exception as exc:
        if suffix == ".csv":
            return  # not CSV after all (the sniffer gave up): nothing for DDE to be in
        result.add("SCAN_FAILED", f"msodde: {type(exc).__name__}: {exc}"[:200])
        return
    finally:
        os.unlink(path)
    _report(fields, result)


def _read_fields(path: str, suffix: str) -> str:
    """msodde's reader for the format; its own dispatcher would list every Word XML field
    (PAGE, HYPERLINK …) as a DDE link."""
    from oletools import msodde, ooxml

    if suffix == ".xls":
        return str(msodde.process_xls(path))
    if suffix == ".csv":
        return str(msodde.process_csv(path))
    doctype = ooxml.get_type(path)
    if doctype in (ooxml.DOCTYPE_WORD_XML, ooxml.DOCTYPE_WORD_XML2003):
        return str(msodde.process_docx(path, msodde.FIELD_FILTER_DDE))
    if doctype in (ooxml.DOCTYPE_EXCEL_XML, ooxml.DOCTYPE_EXCEL_XML2003):
        return str(msodde.process_excel_xml(path))
    return ""


def _report(fields: str | None, result: FileResult) -> None:
    text = (fields or "").strip()
    if text:
        result.add("DDE", " ".join(text.split())[:200])


def _sylk(data: bytes, result: FileResult) -> None:
    from oletools.olevba import VBA_Parser

    found = False
    try:
        parser = VBA_Parser("document.slk", data=data)
        try:
            found = bool(parser.detect_xlm_macros())
        finally:
            parser.close()
    except Exception:  # noqa: S110 - olevba refusing it leaves the formula check below
        pass
    if found:
        result.add("MACRO", "Excel 4.0 (XLM) macro sheet in SYLK")
        result.add("XLM_MACRO", "SYLK")
        return
    call = _SYLK_XLM_CALL.search(data)
    if call:
        result.add("MACRO", f"SYLK formula calls {call.group(1).decode().upper()}")
        result.add("XLM_MACRO", "SYLK")
