"""Keep-mail's reading view: a kept copy parsed, its HTML sanitised (nh3), links neutralised,
remote images held back. Loaded when a message is first shown, not at the portal's cold start
(nh3, lxml.html and the rewrite helpers are the expensive part of the keep-mail pages)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import lxml.html
import nh3

from mailmoat.message import Part, WalkLimits, header_text, parse
from mailmoat.rewrite.defang import defang_html, defang_text, portal_links
from mailmoat.rewrite.htmldoc import body_of, parse_html

if TYPE_CHECKING:
    from mailmoat.pipeline import Services

MAX_HTML_CHARS = 2_000_000  # a body part beyond this is cut before sanitising (bounded work)
MAX_TEXT_CHARS = 1_000_000
MAX_INLINE_IMAGE_BYTES = 2_000_000
# A grey box with a crossed-out frame, shown where a remote image was not loaded.
PLACEHOLDER = "data:image/svg+xml;base64," + base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40"'
    b' fill="#eef0f3" stroke="#b0b7c0"/><path d="M0 0L120 40M120 0L0 40" stroke="#c9ced6"/></svg>'
).decode("ascii")
_INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})  # never SVG
_PORTAL_URL = re.compile(r"https?://[^\s<>\"']+/m/[A-Za-z0-9_-]+")

# What survives sanitising: nh3's defaults (formatting, tables, lists, images) without
# anything that loads or runs; style attributes only with properties that cannot fetch.
_TAGS = set(nh3.ALLOWED_TAGS) - {"area", "map"}
_ATTRIBUTES: dict[str, set[str]] = {
    tag: {a for a in attrs if a not in ("cite", "longdesc")} for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()
}
_ATTRIBUTES["*"] = {"style", "title", "lang", "dir", "align", "valign", "bgcolor", "color", "width", "height"}
_ATTRIBUTES["font"] = {"color", "face", "size"}
_ATTRIBUTES["a"] = {"href", "target"}
_ATTRIBUTES["img"] = {"src", "alt", "width", "height", "align", "border"}
_ATTRIBUTES["table"] = _ATTRIBUTES.get("table", set()) | {"border", "cellpadding", "cellspacing"}
_TAGS.add("font")
_STYLE_PROPERTIES = {
    "color", "background-color", "font-weight", "font-style", "font-size", "font-family",
    "text-align", "text-decoration", "vertical-align", "line-height", "white-space",
    "width", "height", "max-width", "min-width", "padding", "padding-left", "padding-right",
    "padding-top", "padding-bottom", "margin", "margin-left", "margin-right", "margin-top",
    "margin-bottom", "border", "border-collapse", "border-color", "border-style", "border-width",
    "display", "text-indent", "letter-spacing",
}
_DROP_WITH_CONTENT = {"script", "style", "title", "noscript", "template", "textarea", "select",
                      "iframe", "object", "embed", "svg", "math"}



# --- rendering a kept copy ---------------------------------------------------------------------

@dataclass(slots=True)
class KeptAttachment:
    path: str
    filename: str
    size: int


@dataclass(slots=True)
class KeptView:
    subject: str
    from_header: str
    to: str
    date: str
    text: str | None
    has_html: bool
    portal_urls: list[str] = field(default_factory=list)
    attachments: list[KeptAttachment] = field(default_factory=list)


def walk_limits(services: Services) -> WalkLimits:
    limits = services.settings.limits
    return WalkLimits(max_parts=min(limits.max_parts, 1000), max_depth=limits.max_depth)


def render_view(copy: bytes, services: Services) -> KeptView:
    """Headers, the plain text (escaped by the template, links defanged), isolated-file links
    to our own portal, and the attachments left in the copy (the scanner kept them)."""
    parsed = parse(copy, walk_limits(services))
    msg = parsed.message
    keep = portal_links(services.settings.portal_url)
    text_part = next((p for p in parsed.parts if p.kind == "body" and p.inside_message is None
                      and p.content_type == "text/plain"), None)
    html_part = next((p for p in parsed.parts if p.kind == "body" and p.inside_message is None
                      and p.content_type == "text/html"), None)
    text = text_part.text()[:MAX_TEXT_CHARS] if text_part is not None else None
    urls: list[str] = []
    for part in (text_part, html_part):
        if part is None:
            continue
        for url in _PORTAL_URL.findall(part.text()[:MAX_HTML_CHARS]):
            if keep(url) and url not in urls:
                urls.append(url)
    attachments = [KeptAttachment(p.path, p.filename or "unnamed", len(p.payload()))
                   for p in parsed.parts if p.is_attachment and p.inside_message is None][:100]
    return KeptView(
        subject=header_text(msg, "subject") or "", from_header=header_text(msg, "from") or "",
        to=header_text(msg, "to") or "", date=header_text(msg, "date") or "",
        text=defang_text(text, keep) if text is not None else None, has_html=html_part is not None,
        portal_urls=urls, attachments=attachments)


def inline_images(parts: list[Part]) -> dict[str, str]:
    """cid → data: URI for the copy's own inline raster images (never SVG), size-bounded."""
    found: dict[str, str] = {}
    for part in parts:
        if part.kind != "inline-image" or not part.content_id or part.content_type not in _INLINE_TYPES:
            continue
        data = part.payload()
        if len(data) > MAX_INLINE_IMAGE_BYTES:
            continue
        encoded = base64.b64encode(data).decode("ascii")
        found[part.content_id.strip("<>").lower()] = f"data:{part.content_type};base64,{encoded}"
    return found


def _is_web_url(value: str) -> bool:
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def sanitise_html(html: str, *, images: bool, portal_url: str,
                  inline: dict[str, str] | None = None) -> tuple[str, int]:
    """The body part as safe HTML, and how many remote images were held back. nh3 runs first
    (hostile structure out) and last (the final word on every attribute); in between, the
    rewrite stage's defang removes link targets and shows them as text."""
    keep = portal_links(portal_url)
    inline = inline or {}
    first = nh3.clean(html[:MAX_HTML_CHARS], tags=_TAGS, clean_content_tags=_DROP_WITH_CONTENT,
                      attributes=_ATTRIBUTES, url_schemes={"http", "https", "cid", "mailto"},
                      strip_comments=True, link_rel=None, filter_style_properties=_STYLE_PROPERTIES)
    doc = parse_html(first)
    defang_html(doc.root, keep)
    blocked = 0
    for img in doc.root.iter("img"):
        src = (img.get("src") or "").strip()
        if src.lower().startswith("cid:"):
            img.set("src", inline.get(src[4:].strip("<>").lower(), PLACEHOLDER))
        elif _is_web_url(src) and images:
            continue
        else:
            if _is_web_url(src):
                blocked += 1
            img.set("src", PLACEHOLDER)
    for anchor in doc.root.iter("a"):
        if anchor.get("href"):
            anchor.set("target", "_blank")  # our portal, outside the sandboxed frame
    body = lxml.html.tostring(body_of(doc.root), encoding="unicode", method="html")

    def final(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "href":
            return value if tag == "a" and keep(value) else None
        if attribute == "target":
            return "_blank" if tag == "a" else None
        if attribute == "src":
            if tag != "img":
                return None
            if value == PLACEHOLDER or (value.startswith("data:image/") and value in inline.values()):
                return value
            return value if images and _is_web_url(value) else PLACEHOLDER
        return value

    clean = nh3.clean(body, tags=_TAGS, clean_content_tags=_DROP_WITH_CONTENT, attributes=_ATTRIBUTES,
                      url_schemes={"http", "https", "data"}, strip_comments=True,
                      link_rel="noopener noreferrer", attribute_filter=final,
                      filter_style_properties=_STYLE_PROPERTIES)
    return clean, blocked
