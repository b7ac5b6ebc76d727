"""Issue 20 item 2: DDE outside .docx (Word 97–2003, Word 2003 XML, Word 2007 flat XML,
Excel 2003 XML, CSV) and Excel 4.0 macros in SYLK. The text formats are written here as
text; the .doc is LibreOffice's conversion of a .docx with a DDEAUTO field."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.scan.scanfiles import eml, make_ooxml, only

COMMAND = 'c:\\\\windows\\\\system32\\\\cmd.exe "/k calc"'
FIELD_RUNS = ('<w:p><w:r><w:t>Invoice</w:t></w:r></w:p><w:p>'
              '<w:r><w:fldChar w:fldCharType="begin"/></w:r>'
              f'<w:r><w:instrText xml:space="preserve"> DDEAUTO {COMMAND} </w:instrText></w:r>'
              '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>1</w:t></w:r>'
              '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>')
W2006 = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"

WORD_2003_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<?mso-application progid="Word.Document"?>\n'
    '<w:wordDocument xmlns:w="http://schemas.microsoft.com/office/word/2003/wordml">'
    f'<w:body>{FIELD_RUNS}</w:body></w:wordDocument>\n').encode()

WORD_2007_FLAT_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<?mso-application progid="Word.Document"?>\n'
    '<pkg:package xmlns:pkg="http://schemas.microsoft.com/office/2006/xmlPackage">'
    '<pkg:part pkg:name="/_rels/.rels" pkg:contentType="application/vnd.openxmlformats-package.relationships+xml">'
    '<pkg:xmlData><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
    'officeDocument" Target="word/document.xml"/></Relationships></pkg:xmlData></pkg:part>'
    '<pkg:part pkg:name="/word/document.xml" pkg:contentType="application/vnd.openxmlformats-'
    'officedocument.wordprocessingml.document.main+xml"><pkg:xmlData>'
    f'<w:document xmlns:w="{W2006}"><w:body>{FIELD_RUNS}</w:body></w:document>'
    '</pkg:xmlData></pkg:part></pkg:package>\n').encode()

EXCEL_2003_XML = (
    b'<?xml version="1.0"?>\n<?mso-application progid="Excel.Sheet"?>\n'
    b'<Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet" '
    b'xmlns:ss="urn:schemas-microsoft-com:office:spreadsheet">'
    b'<Worksheet ss:Name="Sheet1"><Table><Row>'
    b'<Cell ss:Formula="=cmd|\'/c calc.exe\'!A1"><Data ss:Type="Number">0</Data></Cell>'
    b'</Row></Table></Worksheet></Workbook>\n')

CSV_DDE = b"name,amount\r\nalice,10\r\n=cmd|' /C calc'!A0,20\r\n"
SYLK_XLM = b'ID;P\r\nC;X1;Y1;K0;EEXEC("calc")\r\nC;X1;Y2;K0;EHALT()\r\nE\r\n'
SYLK_MACRO_SHEET = (b'ID;P\r\nO;E\r\nNN;NAuto_open;ER1C1\r\nC;X1;Y1;K0;ECALL("Kernel32","WinExec",'
                    b'"JCJ","calc",0)\r\nC;X1;Y2;K0;EHALT()\r\nE\r\n')


def word_docx_with_dde() -> bytes:
    return make_ooxml("word", body=FIELD_RUNS, padding=6000)


@pytest.mark.parametrize(("name", "data", "ctype"), [
    ("letter.xml", WORD_2003_XML, "application/octet-stream"),
    ("letter.xml", WORD_2007_FLAT_XML, "text/xml"),
    ("book.xml", EXCEL_2003_XML, "application/vnd.ms-excel"),
    ("export.csv", CSV_DDE, "text/csv"),
], ids=["word-2003-xml", "word-2007-flat-xml", "excel-2003-xml", "csv"])
def test_dde_in_text_office_formats_is_risky(analyse, name: str, data: bytes, ctype: str) -> None:
    att = only(analyse(eml((name, data, ctype))))
    assert att["verdict"] == "risky" and "DDE" in att["symbols"], att
    assert att["action"] == "isolate"


@pytest.mark.parametrize("data", [SYLK_XLM, SYLK_MACRO_SHEET], ids=["formula", "macro-sheet"])
def test_excel4_macros_in_sylk_are_danger(analyse, data: bytes) -> None:
    # EXEC/CALL in the formulas: SANDBOX_XLM_EXEC (issue 16) makes it danger, not only risky.
    att = only(analyse(eml(("prices.slk", data))))
    assert att["verdict"] == "danger" and {"MACRO", "SANDBOX_XLM_EXEC"} <= set(att["symbols"]), att
    assert att["action"] == "delete"


ORDINARY = [
    ("plain.csv", b"name,amount,formula\r\nalice,10,=SUM(B2:B3)\r\nbob,-5,|pipe in text\r\n"),
    ("plain.slk", b"ID;P\r\nC;X1;Y1;K10\r\nC;X1;Y2;K20\r\nC;X1;Y3;K30;ESUM(R1C1:R2C1)\r\nE\r\n"),
    ("plain-book.xml", EXCEL_2003_XML.replace(b"=cmd|'/c calc.exe'!A1", b"=SUM(R1C2:R1C3)")),
    ("plain-letter.xml", WORD_2003_XML.replace(f"DDEAUTO {COMMAND}".encode(), b"PAGE")),
]


def test_ordinary_spreadsheets_and_documents_stay_safe_beside_active_ones(analyse) -> None:
    report = analyse(eml(*ORDINARY, ("export.csv", CSV_DDE), ("prices.slk", SYLK_XLM)))
    verdicts = {a["filename"]: a["verdict"] for a in report["attachments"]}
    assert verdicts == {**{name: "safe" for name, _ in ORDINARY},
                        "export.csv": "risky", "prices.slk": "danger"}, report["attachments"]


@pytest.mark.skipif(shutil.which("soffice") is None,
                    reason="LibreOffice is not installed; nothing else here writes a Word 97–2003 file")
def test_dde_in_word_97_2003_is_risky(analyse, tmp_path: Path) -> None:
    (tmp_path / "letter.docx").write_bytes(word_docx_with_dde())
    subprocess.run(["soffice", "--headless", f"-env:UserInstallation=file://{tmp_path}/profile",
                    "--convert-to", "doc:MS Word 97", "--outdir", str(tmp_path / "out"),
                    str(tmp_path / "letter.docx")], check=True, timeout=100, capture_output=True)
    data = (tmp_path / "out" / "letter.doc").read_bytes()
    att = only(analyse(eml(("letter.doc", data))))
    assert att["verdict"] == "risky" and "DDE" in att["symbols"], att
