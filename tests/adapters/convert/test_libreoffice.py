"""convert-pdf's converter against the real LibreOffice, poppler and Pillow (issue 16)."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from mailmoat.convert import ConversionError, active_content
from mailmoat.convert.libreoffice import ConvertLimits, LibreOfficePdfConverter

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("soffice") is None or shutil.which("pdftoppm") is None,
                       reason="LibreOffice (libreoffice-*-nogui) or poppler-utils not installed; "
                              "scripts/system-deps.sh test installs them as root"),
]

_FODP = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"
 xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"
 office:version="1.2" office:mimetype="application/vnd.oasis.opendocument.presentation">
<office:body><office:presentation><draw:page draw:name="one">
<draw:frame svg:x="2cm" svg:y="2cm" svg:width="10cm" svg:height="3cm"><draw:text-box>
<text:p>Quarterly slide</text:p></draw:text-box></draw:frame>
</draw:page></office:presentation></office:body></office:document>
"""


def _docx(body_xml: str) -> bytes:
    """A minimal WordprocessingML package, written with zipfile."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml",
                    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                    '<Default Extension="xml" ContentType="application/xml"/>'
                    '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
        zf.writestr("_rels/.rels",
                    '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')
        zf.writestr("word/document.xml",
                    '<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                    f"<w:body>{body_xml}</w:body></w:document>")
    return buf.getvalue()


def docx_with_text(text: str) -> bytes:
    return _docx(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>")


def _soffice_convert(tmp: Path, src: Path, to: str) -> bytes:
    """Inputs LibreOffice itself writes from text (odt, xlsx, pptx), one cold start each."""
    subprocess.run(["soffice", "--headless", f"-env:UserInstallation={(tmp / 'p').as_uri()}",
                    "--convert-to", to, "--outdir", str(tmp), str(src)],
                   check=True, capture_output=True, timeout=120)
    return (tmp / f"{src.stem}.{to}").read_bytes()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("inputs")
    (tmp / "letter.txt").write_text("Dear reader,\nthe invoice is attached.\n")
    (tmp / "sheet.csv").write_text("item,amount\nwidgets,12\n")
    (tmp / "slides.fodp").write_text(_FODP)
    jpg = io.BytesIO()
    Image.new("RGB", (320, 200), "navy").save(jpg, "JPEG")
    return {"letter.docx": docx_with_text("Dear reader, the invoice is attached."),
            "letter.odt": _soffice_convert(tmp, tmp / "letter.txt", "odt"),
            "sheet.xlsx": _soffice_convert(tmp, tmp / "sheet.csv", "xlsx"),
            "slides.pptx": _soffice_convert(tmp, tmp / "slides.fodp", "pptx"),
            "photo.jpg": jpg.getvalue(),
            "script.pdf": pdf_with_javascript()}


def pdf_with_javascript() -> bytes:
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 200))
    js = pdf.make_indirect(pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS="app.alert('hi')"))
    pdf.Root.OpenAction = js
    pdf.Root.Names = pikepdf.Dictionary(JavaScript=pikepdf.Dictionary(
        Names=pikepdf.Array([pikepdf.String("x"), js])))
    pdf.pages[0].obj.AA = pikepdf.Dictionary(O=js)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def converter() -> Iterator[LibreOfficePdfConverter]:
    conv = LibreOfficePdfConverter(ConvertLimits(seconds=60))
    yield conv
    conv.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["letter.docx", "letter.odt", "sheet.xlsx", "slides.pptx",
                                  "photo.jpg", "script.pdf"])
def test_each_format_becomes_an_inert_pdf(name: str, inputs: dict[str, bytes],
                                          converter: LibreOfficePdfConverter) -> None:
    if name == "script.pdf":
        assert active_content(inputs[name])  # the input really is active
    pdf = converter.convert(inputs[name], name)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert len(doc.pages) >= 1
    assert active_content(pdf) == []


@pytest.mark.timeout(300)
def test_a_warm_conversion_costs_well_under_a_cold_start(inputs: dict[str, bytes],
                                                         converter: LibreOfficePdfConverter) -> None:
    converter.convert(inputs["letter.docx"], "letter.docx")  # soffice up
    started = time.monotonic()
    converter.convert(inputs["letter.docx"], "letter.docx")
    assert time.monotonic() - started < 1.5


@pytest.mark.timeout(300)
def test_a_killed_soffice_is_started_again(inputs: dict[str, bytes],
                                           converter: LibreOfficePdfConverter) -> None:
    converter.convert(inputs["letter.odt"], "letter.odt")
    pid = converter.soffice_pid
    assert pid is not None
    import os
    import signal
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert active_content(converter.convert(inputs["letter.odt"], "letter.odt")) == []
    assert converter.soffice_pid not in (None, pid)


@pytest.mark.timeout(120)
def test_a_zip_bomb_in_a_docx_is_refused_within_bounds(converter: LibreOfficePdfConverter) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_with_text("x")), "r") as src, \
            zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in src.infolist():
            zf.writestr(item, src.read(item))
        zf.writestr("word/media/pad.bin", b"\0" * (300 << 20))  # 300 MB of zeros, ~300 KB packed
    started = time.monotonic()
    with pytest.raises(ConversionError, match="unpacks past"):
        converter.convert(buf.getvalue(), "bomb.docx")
    assert time.monotonic() - started < 10


@pytest.mark.timeout(120)
def test_a_ten_thousand_page_document_ends_within_its_bounds(tmp_path: Path) -> None:
    """Either the first pages (the page cap) or the deadline: never the whole document."""
    limits = ConvertLimits(seconds=20, max_pages=50)
    conv = LibreOfficePdfConverter(limits)
    try:
        page_break = '<w:p><w:r><w:t>page</w:t></w:r><w:r><w:br w:type="page"/></w:r></w:p>'
        data = _docx(page_break * 10_000)
        started = time.monotonic()
        try:
            pdf = conv.convert(data, "long.docx")
        except ConversionError as exc:
            assert "longer than" in str(exc)
        else:
            with pikepdf.open(io.BytesIO(pdf)) as doc:
                assert len(doc.pages) <= 50
        assert time.monotonic() - started < limits.seconds + 15
    finally:
        conv.close()
