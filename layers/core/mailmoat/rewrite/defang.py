"""Neutralise links: anchors lose targets (shown defanged beside the text); bare URLs defanged."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from urllib.parse import urlsplit

import lxml.html
from lxml import etree

from mailmoat.rewrite.htmldoc import xml_safe

# A URL as mail clients autolink it: a scheme, or a bare "www." host. No \b before the
# scheme: Japanese text runs straight into URLs ("こちらhttps://…") and is \w to Python.
_URL = re.compile(r"""(?i)(?:(?:https?|ftp)://|(?<![a-z0-9.-])www\.)[^\s<>"'\u3000\u3001\u3002\uff08\uff09「」]+""")
# Whatever is left of a clickable scheme (e.g. "https://" followed by nothing useful).
_SCHEME = re.compile(r"(?i)(h)tt(ps?)(?=\s*:)|f(t)p(?=\s*://)")
# The same across text nodes (<b>https</b>://…): the "tt" positions are what we change.
_SPLIT_SCHEME = re.compile(r"(?i)h(tt)ps?\s*:\s*/")
# Cheap pre-check, a superset of what the two patterns above can match: most text has no link.
_MAYBE_LINK = re.compile(r"(?i)tps?\s*:|ftp|www\.")
_SCHEME_PREFIX = re.compile(r"(?i)([a-z][a-z0-9+.-]*):(//)?(.*)", re.DOTALL)
_SCHEME_REWRITE = {"http": "hxxp", "https": "hxxps", "ftp": "fxp"}
_MAX_SHOWN = 300  # a defanged target longer than this is shortened in the visible text

# Attributes that navigate or load a document when clicked or rendered (scripts aside, which
# no mail client runs). `href` goes from every element, including SVG's xlink:href.
_NAVIGATING = {
    "form": ("action",),
    "button": ("formaction",),
    "input": ("formaction",),
    "iframe": ("src", "srcdoc"),
    "frame": ("src",),
    "object": ("data",),
    "embed": ("src",),
}
_HREF_NAMES = frozenset({"href", "{http://www.w3.org/1999/xlink}href", "xlink:href"})
_NO_TEXT_REWRITE = frozenset({"script", "style"})

# Links to leave alive: our own portal (the isolate notice's link must stay clickable).
KeepLink = Callable[[str], bool]


def _never(_url: str) -> bool:
    return False


# What follows the portal's /m/ in a link we keep: a message token (isolation.new_token, URL-safe
# base64) and nothing else. An allow-list of characters, matched on the path as written: "%" and
# "." are not in it, so no encoded or literal dot segment (`/m/%2e%2e/admin`, `/m/.%2e/`), no
# encoded slash and no backslash can walk a kept link off the message page.
_PORTAL_MESSAGE_PATH = r"[A-Za-z0-9_-]{1,128}/?"


def portal_links(portal_url: str) -> KeepLink:
    """True for `<portal>/m/<token>` only: same scheme, same host and port (compared parsed, so
    `https://portal.example.evil.test` is not ours), and exactly the message page's route — no
    query, no fragment, no other path under it. A browser resolves `%2e%2e` as `..`, so any
    other path could lead a spoofed mail's live link to a page of ours that is not the portal's
    message page (the admin sign-in, a keep-mail frame escape through target=_blank)."""
    base = urlsplit(portal_url.strip())
    scheme, netloc = base.scheme.lower(), base.netloc.lower()
    if scheme not in ("http", "https") or not netloc:
        return _never
    route = re.compile(re.escape(base.path.rstrip("/") + "/m/") + _PORTAL_MESSAGE_PATH)

    def keep(url: str) -> bool:
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            return False
        return (parts.scheme.lower() == scheme and parts.netloc.lower() == netloc
                and "@" not in parts.netloc and not parts.query and not parts.fragment
                and route.fullmatch(parts.path) is not None)

    return keep


def _defang_host(host: str) -> str:
    return host.replace(".", "[.]")


def defang_url(url: str) -> str:
    """`https://www.example.com/a.b?c` → `hxxps://www[.]example[.]com/a.b?c`."""
    url = url.strip()
    match = _SCHEME_PREFIX.match(url)
    if match is None:
        if url.lower().startswith("www."):
            host, sep, rest = _split_host(url)
            return _defang_host(host) + sep + rest
        return url
    scheme, slashes, rest = match.group(1).lower(), match.group(2) or "", match.group(3)
    if scheme in ("javascript", "data", "vbscript"):
        return f"{scheme}:"  # the payload itself is not worth showing
    shown = _SCHEME_REWRITE.get(scheme, scheme)
    if slashes:
        host, sep, tail = _split_host(rest)
        rest = _defang_host(host) + sep + tail
    return f"{shown}:{slashes}{rest}"


def _split_host(rest: str) -> tuple[str, str, str]:
    for index, ch in enumerate(rest):
        if ch in "/?#":
            return rest[:index], "", rest[index:]
    return rest, "", ""


def defang_text(text: str, keep: KeepLink = _never) -> str:
    """Bare URLs become `hxxps://example[.]com/...`; no clickable http(s):// remains
    except the links `keep` names (our portal)."""
    if not _MAYBE_LINK.search(text):
        return text
    out: list[str] = []
    position = 0
    for match in _URL.finditer(text):
        out.append(_SCHEME.sub(_scheme_repl, text[position:match.start()]))
        url = match.group(0)
        out.append(url if keep(url) else _SCHEME.sub(_scheme_repl, defang_url(url)))
        position = match.end()
    out.append(_SCHEME.sub(_scheme_repl, text[position:]))
    return "".join(out)


def _scheme_repl(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return f"{match.group(1)}xx{match.group(2)}"
    return "fxp"


def _shown(url: str) -> str:
    shown = defang_text(defang_url(url))
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 1] + "…"


def defang_html(root: lxml.html.HtmlElement, keep: KeepLink = _never) -> int:
    """Neutralise every link in the document in place, except those `keep` names (our
    portal). Returns how many targets were removed."""
    removed = 0
    # Conditional comments (<!--[if mso]><a href=…><![endif]-->) are rendered by Outlook,
    # so a comment can hold a live link: comments go, their tail text stays.
    for node in list(root.iter(etree.Comment, etree.ProcessingInstruction)):
        _drop_keep_tail(node)
    for el in list(root.iter()):
        if not isinstance(el.tag, str):
            continue
        tag = el.tag.lower()
        if tag == "meta" and (el.get("http-equiv") or "").strip().lower() == "refresh":
            _drop_keep_tail(el)
            removed += 1
            continue
        if tag == "base":
            _drop_keep_tail(el)
            removed += 1
            continue
        for name in list(el.attrib):
            lname = name.lower()
            if lname in _HREF_NAMES or lname.endswith(":href") or lname.endswith("}href"):
                if tag == "a" and keep(el.attrib[name]):
                    continue
                target = el.attrib.pop(name)
                removed += 1
                if tag in ("a", "area") and target.strip():
                    _show_target(el, tag, target)
            elif lname in _NAVIGATING.get(tag, ()) or lname == "ping":
                del el.attrib[name]
                removed += 1
    _defang_text_nodes(root, keep)
    return removed


def _defang_text_nodes(root: lxml.html.HtmlElement, keep: KeepLink) -> None:
    """Defang every visible text node, then the schemes that only appear when adjacent
    nodes are read together, as the reader (and a client's linkifier) sees them."""
    segments: list[tuple[etree._Element, bool, str]] = []  # (element, is_tail, new text)
    hidden = 0
    for event, el in etree.iterwalk(root, events=("start", "end")):
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if event == "start":
            if tag in _NO_TEXT_REWRITE:
                hidden += 1
            elif not hidden and el.text:
                segments.append((el, False, defang_text(el.text, keep)))
            continue
        if tag in _NO_TEXT_REWRITE:
            hidden -= 1
        if not hidden and el.tail and el is not root:
            segments.append((el, True, defang_text(el.tail, keep)))
    texts = [list(text) for _, _, text in segments]
    joined = "".join(text for _, _, text in segments)
    if _SPLIT_SCHEME.search(joined):
        starts, offset = [], 0
        for _, _, text in segments:
            starts.append(offset)
            offset += len(text)
        kept = [(m.start(), m.end()) for m in _URL.finditer(joined) if keep(m.group(0))]
        for match in _SPLIT_SCHEME.finditer(joined):
            if any(start <= match.start() < end for start, end in kept):
                continue
            for position in range(match.start(1), match.end(1)):
                index = bisect_right(starts, position) - 1
                texts[index][position - starts[index]] = "x"
    for (el, is_tail, _text), chars in zip(segments, texts, strict=True):
        value = xml_safe("".join(chars))
        if is_tail:
            if value != el.tail:
                el.tail = value
        elif value != el.text:
            el.text = value


def _show_target(el: lxml.html.HtmlElement, tag: str, target: str) -> None:
    if target.strip().startswith("#"):
        return  # a jump within the message goes nowhere else
    shown = _shown(target)
    if defang_text(el.text_content().strip()) == shown:
        return  # the link text already is the address, defanged with the other text
    label = f"[{shown}]"
    if tag == "area":
        alt = el.get("alt") or ""
        el.set("alt", xml_safe(f"{label} {alt}".strip()))
        return
    el.text = xml_safe(f"{label} {el.text or ''}")


def _drop_keep_tail(node: etree._Element) -> None:
    parent = node.getparent()
    if parent is None:
        return
    tail = node.tail
    previous = node.getprevious()
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(node)
