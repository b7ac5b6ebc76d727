"""Macro removal for OOXML documents: the VBA project goes, the document stays.

Used by the isolate stage for the `remove-macros` custom-rule action (the cleaned file is
delivered in the message) and by the portal's "macro-removed download". Bounded like every
archive walk: an OOXML package is a zip.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # an annotation only: settings (pydantic) is not the portal's to import
    from mailmoat.settings import Limits


class Budget:
    """What unpacking one untrusted zip (an OOXML package, an archive the portal decrypts) may
    cost: members and expanded bytes, from the limits in settings. Over it, `error` is raised."""

    def __init__(self, limits: Limits, error: type[Exception] | None = None) -> None:
        self.limits = limits
        self.error: type[Exception] = error or MacroRemovalError
        self.total = 0
        self.count = 0

    def add(self, size: int) -> None:
        self.total += size
        if self.total > self.limits.archive_max_expanded_bytes:
            raise self.error(f"expanded size over {self.limits.archive_max_expanded_bytes} bytes")

    def member(self) -> None:
        self.count += 1
        if self.count > self.limits.archive_max_members:
            raise self.error(f"more than {self.limits.archive_max_members} members")


def read_bounded(fh: Any, budget: Budget) -> bytes:
    """A member's bytes, 1 MiB at a time, counted against the budget as they come."""
    chunks: list[bytes] = []
    while True:
        chunk = fh.read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        budget.add(len(chunk))
        chunks.append(chunk)


_MACRO_PARTS = re.compile(r"(^|/)(vbaProject\.bin|vbaData\.xml|vbaProjectSignature\.bin|"
                          r"vbaProjectSignatureAgile\.bin|vbaProjectSignatureV3\.bin)(\.rels)?$",
                          re.IGNORECASE)
_MACRO_FREE_TYPES = {
    "application/vnd.ms-word.document.macroEnabled.main+xml":
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
    "application/vnd.ms-word.template.macroEnabledTemplate.main+xml":
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
    "application/vnd.ms-excel.sheet.macroEnabled.main+xml":
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
    "application/vnd.ms-excel.template.macroEnabled.main+xml":
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml":
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
    "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml":
        "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml",
    "application/vnd.ms-powerpoint.template.macroEnabled.main+xml":
        "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml",
}
_MACRO_FREE_EXT = {"docm": "docx", "dotm": "dotx", "xlsm": "xlsx", "xltm": "xltx",
                   "pptm": "pptx", "potm": "potx", "ppsm": "ppsx"}
_CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"


class MacroRemovalError(Exception):
    """The document cannot be made macro-free here (e.g. binary .xlsb, XLM macro sheets)."""


def has_vba_project(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return any(_MACRO_PARTS.search(n) for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def macro_free_name(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    if dot and ext.lower() in _MACRO_FREE_EXT:
        return f"{stem}.{_MACRO_FREE_EXT[ext.lower()]}"
    return filename


# The MIME type of the macro-free file a macro-enabled one becomes.
_MACRO_FREE_MIME = {
    "application/vnd.ms-word.document.macroenabled.12":
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-word.template.macroenabled.12":
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template",
    "application/vnd.ms-excel.sheet.macroenabled.12":
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-excel.template.macroenabled.12":
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template",
    "application/vnd.ms-powerpoint.presentation.macroenabled.12":
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.ms-powerpoint.slideshow.macroenabled.12":
        "application/vnd.openxmlformats-officedocument.presentationml.slideshow",
    "application/vnd.ms-powerpoint.template.macroenabled.12":
        "application/vnd.openxmlformats-officedocument.presentationml.template",
}


def macro_free_type(mime_type: str | None) -> str:
    """docm → docx and so on; a type already macro-free (or unknown) is kept as it is."""
    value = (mime_type or "application/octet-stream").lower()
    return _MACRO_FREE_MIME.get(value, mime_type or "application/octet-stream")


def parse_xml(data: bytes) -> Any:
    """lxml without entity resolution, network or huge trees: OOXML parts are untrusted."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    return etree.fromstring(data, parser=parser)


def _xml_bytes(root: Any) -> bytes:
    from lxml import etree

    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True))


def remove_macros(data: bytes, limits: Limits, *, active_content: bool = False) -> bytes:
    """An OOXML package without its VBA project: the parts, their relationships and content
    types go; a macro-enabled main part gets the macro-free content type. Verified with
    oletools afterwards (raises MacroRemovalError if any VBA is still found).

    With `active_content`, also the rest of what makes Office documents act on their own:
    external relationships other than hyperlinks (remote templates, linked OLE objects,
    frames) and Word DDE fields. Excel external links cannot be cut out cleanly: refused."""
    budget = Budget(limits)
    try:
        zin = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise MacroRemovalError(f"not an OOXML package: {exc}") from exc
    out = io.BytesIO()
    with zin, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        names = zin.namelist()
        if any("macrosheets/" in n.lower() for n in names):
            raise MacroRemovalError("XLM macro sheets cannot be removed here")
        if not any(n == "[Content_Types].xml" for n in names):
            raise MacroRemovalError("no [Content_Types].xml")
        if active_content and any(n.lower().startswith("xl/externallinks/") for n in names):
            raise MacroRemovalError("Excel external links (DDE) cannot be removed here")
        dropped = {n for n in names if _MACRO_PARTS.search(n)}
        for info in zin.infolist():
            budget.member()
            if info.filename in dropped or info.is_dir():
                continue
            with zin.open(info) as fh:
                content = read_bounded(fh, budget)
            if info.filename == "[Content_Types].xml":
                content = _fix_content_types(content, dropped)
            elif info.filename.lower().endswith(".rels"):
                content = _drop_relationships(content, external=active_content)
            elif active_content and info.filename.lower().startswith("word/") \
                    and info.filename.lower().endswith(".xml") and _DDE_BYTES.search(content):
                content = _drop_dde_fields(content)
            zout.writestr(info.filename, content)
    cleaned = out.getvalue()
    if vba_present(cleaned):
        raise MacroRemovalError("VBA still present after removal")
    return cleaned


def _fix_content_types(content: bytes, dropped: set[str]) -> bytes:
    root = parse_xml(content)
    dropped_parts = {"/" + n.lower() for n in dropped}
    for el in list(root):
        tag = el.tag.split("}")[-1]
        ctype = el.get("ContentType", "")
        vba_type = "vbaproject" in ctype.lower() or "vbadata" in ctype.lower()
        if vba_type or (tag == "Override" and el.get("PartName", "").lower() in dropped_parts):
            root.remove(el)
        elif ctype in _MACRO_FREE_TYPES:
            el.set("ContentType", _MACRO_FREE_TYPES[ctype])
    return _xml_bytes(root)


def _drop_relationships(content: bytes, *, external: bool = False) -> bytes:
    root = parse_xml(content)
    for el in list(root):
        target = el.get("Target", "")
        rtype = el.get("Type", "")
        if _MACRO_PARTS.search(target.split("#")[0]) or rtype.lower().endswith(
                ("/vbaproject", "/wordvbadata", "/vbaprojectsignature")):
            root.remove(el)
        elif external and el.get("TargetMode", "").lower() == "external" \
                and not rtype.endswith("/hyperlink"):
            root.remove(el)  # remote template, linked object or frame: nothing is fetched
    return _xml_bytes(root)


_DDE_BYTES = re.compile(rb"(?i)\bDDE(AUTO)?\b")
_DDE_TEXT = re.compile(r"(?i)\bDDE(AUTO)?\b")


def _drop_dde_fields(content: bytes) -> bytes:
    """Field codes that start programs go; the text the field last showed stays."""
    root = parse_xml(content)
    for el in root.iter():
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag.endswith("}instrText") and el.text and _DDE_TEXT.search(el.text):
            el.text = ""
        elif tag.endswith("}fldSimple"):
            for name in list(el.attrib):
                if name.endswith("instr") and _DDE_TEXT.search(el.attrib[name]):
                    el.attrib[name] = ""
    return _xml_bytes(root)


def vba_present(data: bytes) -> bool:
    """oletools' view: does this file carry VBA macros?"""
    from oletools.olevba import VBA_Parser

    parser = VBA_Parser("document", data=data)
    try:
        return bool(parser.detect_vba_macros())
    finally:
        parser.close()


# --- downloads -------------------------------------------------------------------------------
