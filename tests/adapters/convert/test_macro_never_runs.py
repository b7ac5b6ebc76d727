"""A document whose OnLoad event runs a Basic macro converts without the macro running: the
private profile's macro settings and MacroExecutionMode=0 hold (issue 16). The control loads the
same document in a LibreOffice that allows macros and sees the macro write its file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mailmoat.convert import active_content
from mailmoat.convert.libreoffice import LibreOfficePdfConverter

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("soffice") is None or not Path("/usr/bin/python3").exists(),
                       reason="LibreOffice (libreoffice-*-nogui, python3-uno) not installed; "
                              "scripts/system-deps.sh test installs them as root"),
]

_FODT = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0"
 xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:ooo="http://openoffice.org/2004/office"
 xmlns:dom="http://www.w3.org/2001/xml-events" office:version="1.2"
 office:mimetype="application/vnd.oasis.opendocument.text">
<office:scripts>
<office:script script:language="ooo:Basic"><ooo:libraries><ooo:library-embedded ooo:name="Standard">
<ooo:module ooo:name="Module1"><ooo:source-code>Sub Main
  Dim n As Integer
  n = FreeFile
  Open "{flag}" For Output As #n
  Print #n, "the macro ran"
  Close #n
End Sub
</ooo:source-code></ooo:module></ooo:library-embedded></ooo:libraries></office:script>
<office:event-listeners><script:event-listener script:language="ooo:script"
 script:event-name="dom:load" xlink:type="simple"
 xlink:href="vnd.sun.star.script:Standard.Module1.Main?language=Basic&amp;location=document"/>
</office:event-listeners>
</office:scripts>
<office:body><office:text><text:p>Invoice</text:p></office:text></office:body></office:document>
"""

# The control: what a careless converter does (macro security low, MacroExecutionMode 4 =
# ALWAYS_EXECUTE_NO_WARN, a visible frame so load events fire).
_CARELESS_CLIENT = """
import sys, time, uno
from com.sun.star.beans import PropertyValue
pipe, src = sys.argv[1], sys.argv[2]
local = uno.getComponentContext()
resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
for _ in range(300):
    try:
        ctx = resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext"); break
    except Exception:
        time.sleep(0.1)
desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
p = PropertyValue(); p.Name, p.Value = "MacroExecutionMode", 4
doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(src), "_blank", 0, (p,))
doc.close(True)
"""
_LOW_SECURITY = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>0</value></prop></item>
</oor:items>
"""


def _careless_load(tmp: Path, src: Path) -> None:
    (tmp / "profile" / "user").mkdir(parents=True)
    (tmp / "profile" / "user" / "registrymodifications.xcu").write_text(_LOW_SECURITY)
    (tmp / "client.py").write_text(_CARELESS_CLIENT)
    pipe = f"mailmoat-control-{time.monotonic_ns()}"
    soffice = subprocess.Popen(
        ["soffice", "--headless", "--invisible", "--norestore", "--nologo",
         f"-env:UserInstallation={(tmp / 'profile').as_uri()}",
         f"--accept=pipe,name={pipe};urp;StarOffice.ComponentContext"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        subprocess.run(["/usr/bin/python3", str(tmp / "client.py"), pipe, str(src)],
                       check=True, capture_output=True, timeout=120)
    finally:
        os.killpg(soffice.pid, signal.SIGKILL)  # the wrapper script and its soffice.bin
        soffice.wait(timeout=30)


@pytest.mark.timeout(300)
def test_an_onload_macro_does_not_run_when_the_document_is_converted(tmp_path: Path) -> None:
    flag = tmp_path / "macro-ran.txt"
    document = _FODT.replace("{flag}", str(flag)).encode()

    control = tmp_path / "control"
    control.mkdir()
    (control / "invoice.fodt").write_bytes(document)
    _careless_load(control, control / "invoice.fodt")
    assert flag.exists(), "control: the document's OnLoad macro should run where macros are allowed"
    flag.unlink()

    converter = LibreOfficePdfConverter(work_dir=tmp_path)
    try:
        pdf = converter.convert(document, "invoice.fodt")
    finally:
        converter.close()
    assert pdf.startswith(b"%PDF") and active_content(pdf) == []
    assert not flag.exists(), "the macro ran during conversion"
