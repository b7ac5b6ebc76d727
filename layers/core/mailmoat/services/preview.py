"""What the recipient sees of a file before downloading it: rendered pages, a re-encoded image, text."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailmoat.scan.macros import Budget, parse_xml, read_bounded

if TYPE_CHECKING:  # an annotation only: settings (pydantic) is not the portal's to import
    from mailmoat.settings import Limits

PDF = "application/pdf"
# Word, Excel and PowerPoint OOXML, with and without macros: text preview, macro removal, safe copy.
OOXML_MACRO_TYPES = frozenset({
    "application/vnd.ms-word.document.macroEnabled.12",
    "application/vnd.ms-excel.sheet.macroEnabled.12",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
})

PREVIEW_PAGES = 3
PREVIEW_TEXT_BYTES = 200_000
PREVIEW_MAX_SIDE = 1400
PREVIEW_MAX_PIXELS = 40_000_000  # decompression-bomb guard for images
_TEXT_TYPES = frozenset({"text/plain", "text/csv", "application/json", "application/xml", "text/xml"})
# Images that are documents (SVG carries script): shown as their source text, never rendered.
_MARKUP_IMAGE_TYPES = frozenset({"image/svg+xml"})
_OOXML_TEXT_PARTS = re.compile(r"^(word/document\.xml|xl/sharedStrings\.xml|ppt/slides/slide\d+\.xml)$")


class PreviewError(Exception):
    """This file is beyond what a preview may cost."""


@dataclass(slots=True)
class Preview:
    """What the recipient sees before downloading: rendered pages / a re-encoded image as PNG
    data URIs, or plain text. Nothing of the original file reaches the browser as is."""

    images: list[str] = field(default_factory=list)
    text: str | None = None
    truncated: bool = False


def previewable(detected_type: str | None) -> bool:
    kind = detected_type or ""
    return (kind == PDF or kind.startswith("image/") or kind in _TEXT_TYPES
            or kind.startswith("text/") or kind in OOXML_MACRO_TYPES)


def preview(data: bytes, detected_type: str | None, limits: Limits) -> Preview:
    kind = detected_type or ""
    if kind == PDF:
        return _pdf_preview(data)
    if kind.startswith("image/") and kind not in _MARKUP_IMAGE_TYPES:
        return _image_preview(data)
    if kind in OOXML_MACRO_TYPES:
        return _office_text(data, limits)
    from mailmoat.charsets import decode_bytes

    head = data[:PREVIEW_TEXT_BYTES]
    return Preview(text=decode_bytes(head, None), truncated=len(data) > len(head))


def _png_uri(image: Any) -> str:
    import base64

    image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pdf_preview(data: bytes) -> Preview:
    import pypdfium2

    doc = pypdfium2.PdfDocument(data)
    try:
        count = len(doc)
        out = Preview(truncated=count > PREVIEW_PAGES)
        for index in range(min(count, PREVIEW_PAGES)):
            page = doc[index]
            try:
                width, height = page.get_size()
                scale = min(1.5, PREVIEW_MAX_SIDE / max(width, height, 1.0))
                out.images.append(_png_uri(page.render(scale=scale).to_pil()))
            finally:
                page.close()
        return out
    finally:
        doc.close()


def _image_preview(data: bytes) -> Preview:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = PREVIEW_MAX_PIXELS
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)  # first frame of an animation is enough
        return Preview(images=[_png_uri(image.copy())])


def _office_text(data: bytes, limits: Limits) -> Preview:
    budget = Budget(limits, PreviewError)
    texts: list[str] = []
    size = 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted((n for n in zf.namelist() if _OOXML_TEXT_PARTS.match(n)),
                       key=lambda n: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", n)])
        for name in names[:200]:
            with zf.open(name) as fh:
                root = parse_xml(read_bounded(fh, budget))
            for el in root.iter():
                tag = el.tag if isinstance(el.tag, str) else ""
                if tag.endswith("}t") and el.text:
                    texts.append(el.text)
                    size += len(el.text)
                elif tag.endswith("}p") and texts and texts[-1] != "\n":
                    texts.append("\n")
            if size > PREVIEW_TEXT_BYTES:
                return Preview(text="".join(texts)[:PREVIEW_TEXT_BYTES], truncated=True)
    return Preview(text="".join(texts))
