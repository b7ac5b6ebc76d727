"""PDF conversion for `convert-pdf` (issue 16): which files convert, and the check every PDF passes."""

from __future__ import annotations

import posixpath

# The product's conversion list, by extension.
OFFICE_EXTENSIONS = frozenset({
    "doc", "dot", "docx", "docm", "dotx", "xls", "xlt", "xla", "xlsx", "ppt", "pot", "pps", "pptx",
    "pptm", "potx", "potm", "ppsx", "ppsm", "odt", "ott", "fodt", "uot", "ods", "ots", "fods", "uos",
    "odp", "otp", "fodp", "uop", "odg", "otg", "fodg", "vsd", "vsdx", "vsdm", "sdc", "stc", "sxc",
    "stw", "sxw", "sxi", "sti", "odm"})
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif", "bmp"})
CONVERTIBLE = OFFICE_EXTENSIONS | IMAGE_EXTENSIONS | {"pdf"}

# Keys that make a PDF do something besides show pages.
_ACTIVE = ("/JavaScript", "/JS", "/OpenAction", "/AA", "/Launch", "/URI", "/SubmitForm",
           "/ImportData", "/GoToR", "/GoToE", "/RichMedia", "/EmbeddedFile")


class ConversionError(Exception):
    """The file could not be made into a PDF within its bounds; it stays isolated."""


def extension(filename: str) -> str:
    return posixpath.splitext(filename.lower())[1].lstrip(".")


def convertible(filename: str) -> bool:
    return extension(filename) in CONVERTIBLE


def pdf_name(filename: str) -> str:
    stem = posixpath.splitext(filename)[0] or "converted"
    return f"{stem}.pdf"


def active_content(pdf: bytes) -> list[str]:
    """The active-content keys anywhere in the PDF's objects (pikepdf parses it); [] for an
    inert PDF. A PDF pikepdf cannot open counts as active: it cannot be checked."""
    import io

    import pikepdf

    try:
        with pikepdf.open(io.BytesIO(pdf)) as doc:
            found: set[str] = set()
            for obj in doc.objects:
                if isinstance(obj, pikepdf.Dictionary | pikepdf.Stream):
                    keys = set(obj.keys())
                    found |= {k for k in _ACTIVE if k in keys}
                    if obj.get("/S") in (pikepdf.Name.JavaScript, pikepdf.Name.Launch,
                                         pikepdf.Name.URI):
                        found.add(str(obj.get("/S")))
            return sorted(found)
    except pikepdf.PdfError as exc:
        return [f"unreadable: {exc}"]


def strip_active(pdf: bytes) -> bytes:
    """LibreOffice's export keeps hyperlinks (URI actions) and may carry document actions; the
    copy keeps only what is drawn: annotations, outlines, forms, names and actions go."""
    import io

    import pikepdf

    with pikepdf.open(io.BytesIO(pdf)) as doc:
        root = doc.Root
        for key in ("/OpenAction", "/AA", "/Names", "/Outlines", "/AcroForm", "/URI"):
            if key in root:
                del root[key]
        for page in doc.pages:
            for key in ("/Annots", "/AA"):
                if key in page.obj:
                    del page.obj[key]
        doc.remove_unreferenced_resources()
        out = io.BytesIO()
        doc.save(out)
        return out.getvalue()
