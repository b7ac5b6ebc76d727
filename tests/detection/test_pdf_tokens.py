"""Issue 20 item 5: a PDF whose structure cannot be parsed still names its active content (a
raw token scan, the pdfid approach, #xx escapes in names decoded), and an OpenAction that only
opens a page is not active content."""

from __future__ import annotations

import io
from typing import Any

import pikepdf
import pytest

from tests.unit.scan.scanfiles import eml, only


def broken_trailer_pdf(body: bytes) -> bytes:
    """A catalog and its action, then a trailer that never closes: qpdf cannot recover it,
    Acrobat-style readers that repair files still run the OpenAction. Padded to 191 bytes."""
    head = b"%PDF-1.4\n" + body + b"\ntrailer<</Root 1 0 R\n"
    data = head + b"%" + b"x" * max(0, 191 - len(head) - 8) + b"\n%%EOF\n"
    return data


OPENACTION_JS = broken_trailer_pdf(
    b"1 0 obj<</Type/Catalog/OpenAction 2 0 R>>endobj\n"
    b"2 0 obj<</S/JavaScript/JS(app.alert\\(1\\))>>endobj")
HEX_ESCAPED = broken_trailer_pdf(
    b"1 0 obj<</Type/Catalog/O#70enAction<</S/J#61vaScript/J#53(app.alert\\(1\\))>>>>endobj")
LAUNCH_EMBEDDED = broken_trailer_pdf(
    b"1 0 obj<</Type/Catalog/AA<</O<</S/Launch/F(cmd.exe)>>>>/Names<</EmbeddedFiles 3 0 R>>>>endobj")


@pytest.mark.parametrize(("data", "expected"), [
    (OPENACTION_JS, {"PDF_OPENACTION", "PDF_JAVASCRIPT"}),
    (HEX_ESCAPED, {"PDF_OPENACTION", "PDF_JAVASCRIPT"}),
    (LAUNCH_EMBEDDED, {"PDF_AA", "PDF_LAUNCH", "PDF_EMBEDDED_FILE"}),
], ids=["openaction-javascript", "hex-escaped-names", "launch-and-embedded"])
def test_unparseable_pdf_still_names_its_active_content(analyse, data: bytes,
                                                         expected: set[str]) -> None:
    with pytest.raises(pikepdf.PdfError):  # qpdf's repair gives up on these
        pikepdf.open(io.BytesIO(data))
    assert len(OPENACTION_JS) == 191
    att = only(analyse(eml(("invoice.pdf", data))))
    assert {"PDF_UNREADABLE", "PDF_ACTIVE_CONTENT"} | expected <= set(att["symbols"]), att
    assert att["verdict"] == "risky" and att["action"] == "isolate"


def pdf_opening_at(open_action: Any = None, *, pages: int = 3) -> bytes:
    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page()
    if open_action is not None:
        pdf.Root.OpenAction = open_action(pdf)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


@pytest.mark.parametrize("open_action", [
    lambda pdf: pikepdf.Array([pdf.pages[2].obj, pikepdf.Name.Fit]),
    lambda pdf: pikepdf.Array([pdf.pages[0].obj, pikepdf.Name.XYZ, 0, 792, 0]),
    lambda pdf: pikepdf.Dictionary(S=pikepdf.Name.GoTo,
                                   D=pikepdf.Array([pdf.pages[1].obj, pikepdf.Name.Fit])),
], ids=["destination-fit", "destination-xyz", "goto-action"])
def test_an_openaction_that_only_opens_a_page_is_safe(analyse, open_action: Any) -> None:
    att = only(analyse(eml(("report.pdf", pdf_opening_at(open_action)))))
    assert att["verdict"] == "safe" and att["action"] == "keep", att


def test_a_destination_openaction_in_an_unparseable_pdf_is_not_named(analyse) -> None:
    data = broken_trailer_pdf(b"1 0 obj<</Type/Catalog/OpenAction [3 0 R /Fit]"
                              b"/AA<</WC<</S/JavaScript/JS(x)>>>>>>endobj")
    att = only(analyse(eml(("invoice.pdf", data))))
    assert "PDF_JAVASCRIPT" in att["symbols"] and "PDF_OPENACTION" not in att["symbols"], att
