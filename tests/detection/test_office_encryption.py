"""Issue 20 item 1: VelvetSweatshop decided by decrypting, in every Office container, and what
the encryption hides is scanned. Every file is built here: OOXML packages with zipfile,
encrypted with msoffcrypto-tool; Word/Excel 97–2003 with LibreOffice when it is installed."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.unit.scan.scanfiles import eml, only
from tests.unit.scan.vbafiles import vba_project_bin

VELVET = "VelvetSweatshop"
NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PR = "http://schemas.openxmlformats.org/package/2006/relationships"

# (file name, main part, its content type, with a VBA project)
WORKBOOKS = {
    "xlsx": ("xl/workbook.xml", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
             False),
    "xltx": ("xl/workbook.xml",
             "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml", False),
    "xlsm": ("xl/workbook.xml", "application/vnd.ms-excel.sheet.macroEnabled.main+xml", True),
    "xltm": ("xl/workbook.xml", "application/vnd.ms-excel.template.macroEnabled.main+xml", True),
    "xlsb": ("xl/workbook.bin", "application/vnd.ms-excel.sheet.binary.macroEnabled.main", True),
}


def workbook(ext: str) -> bytes:
    main, ctype, macros = WORKBOOKS[ext]
    types = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
             '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
             '<Default Extension="xml" ContentType="application/xml"/>'
             '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
             f'<Override PartName="/{main}" ContentType="{ctype}"/></Types>')
    rels = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{PR}">'
            f'<Relationship Id="rId1" Type="{R}/officeDocument" Target="{main}"/></Relationships>')
    members = {"[Content_Types].xml": types.encode(), "_rels/.rels": rels.encode(),
               main: (f'<?xml version="1.0"?><workbook xmlns="{NS}"><sheets/></workbook>'.encode()
                      if main.endswith(".xml") else b"\x83\x01\x00\x84\x01\x00"),
               "xl/media/image1.png": os.urandom(6000)}  # msoffcrypto needs > 4 KiB
    if macros:
        members["xl/vbaProject.bin"] = vba_project_bin()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def agile_encrypt(plain: bytes, password: str, *, padded_verifier: bool = False,
                  spin_count: int | None = None) -> bytes:
    """msoffcrypto-tool's agile encryption, as a writer that pads the encrypted verifier hash
    with one more AES block (CBC keeps the first 64 bytes: the package still decrypts) or
    that declares its own spin count."""
    from msoffcrypto.method.container.ecma376_encrypted import ECMA376Encrypted
    from msoffcrypto.method.ecma376_agile import ECMA376Agile

    info, secret_key = ECMA376Agile.generate_encryption_parameters(password)
    if padded_verifier:
        info.encryptedVerifierHashValue = bytes(info.encryptedVerifierHashValue) + os.urandom(16)
    if spin_count is not None:
        info.spinCount = spin_count
    payload = ECMA376Agile.encrypt_payload(io.BytesIO(plain), info.encryptedKey, secret_key,
                                           info.keyData.saltValue)
    descriptor = ECMA376Agile.get_encryption_information(info, payload, secret_key)
    out = io.BytesIO()
    ECMA376Encrypted(payload, descriptor).write_to(out)
    return out.getvalue()


@pytest.mark.parametrize("ext", sorted(WORKBOOKS))
def test_velvetsweatshop_workbook_is_danger_and_its_macros_are_named(analyse, ext: str) -> None:
    import msoffcrypto

    data = agile_encrypt(workbook(ext), VELVET, padded_verifier=True)
    office = msoffcrypto.OfficeFile(io.BytesIO(data))  # the verifier says no, decryption works
    with pytest.raises(Exception, match="verification failed"):
        office.load_key(password=VELVET, verify_password=True)
    locked = agile_encrypt(workbook(ext), "pw-1234", padded_verifier=True)
    report = analyse(eml((f"invoice.{ext}", data), (f"locked.{ext}", locked)))
    att, other = report["attachments"]
    assert att["verdict"] == "danger", att
    assert "VELVETSWEATSHOP" in att["symbols"] and "ENCRYPTED_OFFICE" not in att["symbols"]
    if WORKBOOKS[ext][2]:
        assert {"MACRO", "MACRO_AUTOEXEC"} <= set(att["symbols"]), att
    # A real password stays a real password: encrypted, offered for unlocking.
    assert other["verdict"] == "encrypted" and "VELVETSWEATSHOP" not in other["symbols"], other


def test_a_hostile_spin_count_is_refused_not_spun(analyse) -> None:
    # 20,000,000 SHA-512 rounds per password try: minutes of CPU for each look at the file.
    data = agile_encrypt(workbook("xlsx"), VELVET, spin_count=20_000_000)
    att = only(analyse(eml(("invoice.xlsx", data))))
    assert "ENCRYPTION_SPIN_LIMIT" in att["symbols"], att
    assert att["verdict"] == "unsupported" and att["action"] == "isolate"


# --- 97–2003: LibreOffice writes RC4-encrypted .xls and .doc -----------------------------------

_UNO_SAVE = r'''
import os, subprocess, sys, time, uno
from com.sun.star.beans import PropertyValue
def prop(name, value):
    p = PropertyValue(); p.Name = name; p.Value = value; return p
src, dst, filter_name, password, profile = sys.argv[1:6]
pipe = "mailmoat-test-%d" % os.getpid()
office = subprocess.Popen(["soffice", "--headless", "--invisible", "--norestore", "--nologo",
                           "-env:UserInstallation=" + uno.systemPathToFileUrl(profile),
                           "--accept=pipe,name=%s;urp;" % pipe])
try:
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
    for _ in range(300):
        try:
            ctx = resolver.resolve("uno:pipe,name=%s;urp;StarOffice.ComponentContext" % pipe)
            break
        except Exception:
            time.sleep(0.1)
    desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(src), "_blank", 0, (prop("Hidden", True),))
    doc.storeToURL(uno.systemPathToFileUrl(dst), (prop("FilterName", filter_name), prop("Password", password)))
    doc.close(True)
    try:
        desktop.terminate()
    except Exception:
        pass
    office.wait(30)
finally:
    if office.poll() is None:
        office.kill()
'''


def _system_python_with_uno() -> str | None:
    """LibreOffice's Python bridge lives in the system Python, not in the venv."""
    if shutil.which("soffice") is None:
        return None
    for python in ("/usr/bin/python3", sys.executable):
        probe = subprocess.run([python, "-c", "import uno"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return python
    return None


UNO_PYTHON = _system_python_with_uno()
needs_libreoffice = pytest.mark.skipif(
    UNO_PYTHON is None, reason="LibreOffice with its Python bridge (python3-uno) is not installed; "
    "nothing else here writes RC4-encrypted 97–2003 files")


def libreoffice_save(tmp_path: Path, source_name: str, source: bytes, filter_name: str,
                     ext: str) -> bytes:
    assert UNO_PYTHON is not None
    src, dst = tmp_path / source_name, tmp_path / f"out.{ext}"
    src.write_bytes(source)
    script = tmp_path / "save.py"
    script.write_text(_UNO_SAVE)
    subprocess.run([UNO_PYTHON, str(script), str(src), str(dst), filter_name, VELVET,
                    str(tmp_path / "profile")], check=True, timeout=100, capture_output=True)
    return dst.read_bytes()


@needs_libreoffice
def test_velvetsweatshop_97_2003_files_are_danger_and_what_they_hide_is_named(analyse,
                                                                              tmp_path: Path) -> None:
    from tests.detection.test_dde_formats import word_docx_with_dde

    book = libreoffice_save(tmp_path, "book.csv", b"a,b\n1,2\n", "MS Excel 97", "xls")
    letter = libreoffice_save(tmp_path, "letter.docx", word_docx_with_dde(), "MS Word 97", "doc")
    book_att, letter_att = analyse(eml(("book.xls", book), ("letter.doc", letter)))["attachments"]
    assert book_att["verdict"] == "danger" and "VELVETSWEATSHOP" in book_att["symbols"], book_att
    assert letter_att["verdict"] == "danger" and "VELVETSWEATSHOP" in letter_att["symbols"]
    assert "DDE" in letter_att["symbols"], letter_att  # the field under the encryption
