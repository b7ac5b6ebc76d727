"""Parse an HTML body part with lxml (a real parser) and write it back with true charset metas."""

from __future__ import annotations

import re
from dataclasses import dataclass

import lxml.html
from lxml import etree

# libxml2 refuses these in text and attribute values; they carry nothing a reader sees.
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_DOCTYPE = re.compile(r"(?i)<!doctype")


@dataclass(slots=True)
class HtmlDoc:
    root: lxml.html.HtmlElement
    # libxml2 invents an HTML 4.0 doctype when the part had none; only a real one is written back.
    had_doctype: bool


def xml_safe(text: str) -> str:
    return _XML_UNSAFE.sub("", text)


def parse_html(text: str) -> HtmlDoc:
    """A whole document, `<html><body>` always present. The text is handed over as UTF-8
    bytes with the encoding fixed, so a `<meta charset>` in the part cannot re-decode it."""
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_blank_text=False, no_network=True)
    data = xml_safe(text).encode("utf-8", "replace")
    root: lxml.html.HtmlElement | None = None
    if data.strip():
        try:
            root = lxml.html.document_fromstring(data, parser=parser)
        except (etree.ParserError, etree.XMLSyntaxError):
            root = None  # "Document is empty" for markup with no elements at all
    if root is None:
        root = lxml.html.document_fromstring(b"<html><body></body></html>", parser=parser)
        if data.strip():
            body_el = root.find("body")
            if body_el is not None:
                body_el.text = xml_safe(text)
    if root.find("body") is None:
        # A frameset or head-only document: give the banner somewhere to go.
        etree.SubElement(root, "body")
    return HtmlDoc(root, bool(_DOCTYPE.search(text[:4096])))


def body_of(root: lxml.html.HtmlElement) -> lxml.html.HtmlElement:
    body_el = root.find("body")
    if body_el is None:
        body_el = etree.SubElement(root, "body")
    return body_el


def set_declared_charset(root: lxml.html.HtmlElement, charset: str) -> None:
    """Make `<meta>` charset declarations agree with the MIME charset we write the part in."""
    for meta in root.iter("meta"):
        if meta.get("charset") is not None:
            meta.set("charset", charset)
        elif (meta.get("http-equiv") or "").strip().lower() == "content-type":
            meta.set("content", f"text/html; charset={charset}")


def serialize_html(doc: HtmlDoc) -> str:
    doctype = doc.root.getroottree().docinfo.doctype if doc.had_doctype else ""
    out = lxml.html.tostring(doc.root, encoding="unicode", method="html")
    return f"{doctype}\n{out}" if doctype else out
