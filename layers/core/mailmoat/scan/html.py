"""HTML and SVG attachments that act when opened: script, event handlers, forms that post
elsewhere, meta refresh, javascript:/data:/blob: URLs (HTML smuggling, credential phishing).

Only files are checked here; an HTML mail body is not an attachment (DESIGN §3) and never
reaches the engine."""

from __future__ import annotations

import email
import email.policy
import re
from typing import Any

from mailmoat.scan import filetype as ft
from mailmoat.scan.result import FileResult

HTML_EXTENSIONS = frozenset({"html", "htm", "shtml", "xhtml", "svg", "svgz", "mht", "mhtml", "xht"})
_ACTIVE_TYPES = frozenset({"text/html", "image/svg+xml", "application/xhtml+xml", "text/xhtml"})

MAX_HTML_BYTES = 10 * 1024 * 1024  # a larger page is not parsed: reported, fail towards caution
MAX_ELEMENTS = 200_000
MAX_MHT_PARTS = 200
MAX_FINDINGS = 10

# Attributes whose value is a URL the browser loads or navigates to.
_URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "data", "srcdoc", "poster",
                             "background", "xlink:href", "code", "codebase"})
_ACTIVE_SCHEMES = ("javascript:", "vbscript:", "data:", "blob:")
_SPACE = re.compile(r"[\x00-\x20]+")
_EMBEDDING = frozenset({"iframe", "object", "embed", "applet", "frame"})


def has_active_name(name: str | None) -> bool:
    return (ft.extension(name) or "").lower() in HTML_EXTENSIONS


def is_active_type(detected: str) -> bool:
    return detected in _ACTIVE_TYPES


def analyse_html(data: bytes, detected: str, result: FileResult) -> None:
    """Add HTML_ACTIVE_CONTENT, one per kind of active element, naming it."""
    if len(data) > MAX_HTML_BYTES:
        result.add("HTML_ACTIVE_CONTENT", f"not checked: larger than {MAX_HTML_BYTES} bytes")
        return
    pages = _mht_pages(data) if _looks_like_mht(data) else [data]
    found: list[str] = []
    for page in pages:
        for detail in active_elements(page):
            if detail not in found:
                found.append(detail)
    for detail in found[:MAX_FINDINGS]:
        result.add("HTML_ACTIVE_CONTENT", detail)


def _looks_like_mht(data: bytes) -> bool:
    head = data[:2048].lower()
    return b"mime-version:" in head and b"multipart/" in head


def _mht_pages(data: bytes) -> list[bytes]:
    """The HTML and SVG parts of a web archive (an .mht is a MIME message)."""
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    pages: list[bytes] = []
    for n, part in enumerate(message.walk()):
        if n >= MAX_MHT_PARTS:
            break
        if part.get_content_type() in _ACTIVE_TYPES:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                pages.append(payload[:MAX_HTML_BYTES])
    return pages


def active_elements(page: bytes) -> list[str]:
    """What in one HTML/SVG document runs or sends something, as short names."""
    from lxml import etree

    parser = etree.HTMLParser(no_network=True, huge_tree=False, remove_comments=True,
                              remove_pis=True)
    try:
        root = etree.fromstring(page, parser)
    except (etree.ParserError, ValueError):
        return []
    if root is None:
        return []
    found: list[str] = []

    def note(detail: str) -> None:
        if detail not in found:
            found.append(detail)

    for n, el in enumerate(root.iter()):
        if n > MAX_ELEMENTS:
            note(f"not checked past {MAX_ELEMENTS} elements")
            break
        if not isinstance(el.tag, str):
            continue
        _check_element(_local(el.tag), el, note)
    return found


def _check_element(tag: str, el: Any, note: Any) -> None:
    if tag == "script":
        note("script")
    elif tag == "meta" and str(el.get("http-equiv", "")).strip().lower() == "refresh":
        note("meta refresh")
    elif tag == "form":
        action = str(el.get("action", "")).strip()
        if re.match(r"(?i)^(https?:)?//", action):
            note(f"form action={action[:200]}")
    elif tag in _EMBEDDING:
        note(tag)
    for name, value in el.attrib.items():
        attr = _local(str(name)).lower()
        if attr.startswith("on"):
            note(attr)
        elif attr in _URL_ATTRIBUTES or attr.endswith(":href"):
            url = _SPACE.sub("", str(value)).lower()
            if tag == "img" and url.startswith("data:image/") and not url.startswith("data:image/svg"):
                continue  # an inline picture: a raster image cannot run or save anything
            for scheme in _ACTIVE_SCHEMES:
                if url.startswith(scheme):
                    note(f"{scheme} URL")


def _local(name: str) -> str:
    """'{ns}script' and 'svg:script' are both 'script'; 'xlink:href' stays itself."""
    name = name.rsplit("}", 1)[-1]
    if ":" in name and not name.startswith("xlink:"):
        name = name.split(":", 1)[1]
    return name.lower()
