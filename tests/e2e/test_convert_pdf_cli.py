"""`mailmoat process` with a convert-pdf rule: a docx comes out as a PDF in the --out message,
converted by the real LibreOffice (issue 16 acceptance)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailmoat.convert import active_content
from tests.adapters.convert.test_libreoffice import docx_with_text
from tests.conftest import DEMO_CONFIG, FIXTURES, ROOT
from tests.unit.isolation.builders import message

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("soffice") is None,
                       reason="LibreOffice (libreoffice-*-nogui) not installed; "
                              "scripts/system-deps.sh test installs it as root"),
]


@pytest.mark.timeout(300)
def test_process_turns_a_docx_into_a_pdf_in_the_out_message(tmp_path: Path) -> None:
    config = tmp_path / "convert.toml"
    config.write_text(DEMO_CONFIG.read_text(encoding="utf-8")
                      + '\n[[tenant.rules]]\nname = "office-to-pdf"\naction = "convert-pdf"\n',
                      encoding="utf-8")
    src, out = tmp_path / "msg.eml", tmp_path / "out.eml"
    src.write_bytes(message(("見積書.docx", docx_with_text("Quotation 42"),
                             "application/vnd.openxmlformats-officedocument.wordprocessingml.document")))
    env = {**os.environ, "MAILMOAT_DATA_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [sys.executable, "-m", "mailmoat.local.cli", "process", "--config", str(config),
         "--dns-zone", str(FIXTURES / "empty-zone.json"), "--json", "--out", str(out), str(src)],
        cwd=ROOT, env=env, capture_output=True, timeout=240)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"CONVERTED_TO_PDF" in result.stdout, result.stdout.decode()[-2000:]
    msg = message_from_bytes(out.read_bytes(), policy=policy.default)
    files = [(p.get_content_type(), p.get_filename(), p.get_payload(decode=True))
             for p in msg.walk() if not p.is_multipart() and p.get_filename()]
    [(ctype, name, data)] = files
    assert (ctype, name) == ("application/pdf", "見積書.pdf")
    assert data.startswith(b"%PDF") and active_content(data) == []
