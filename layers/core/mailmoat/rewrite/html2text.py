"""Render an HTML body as plain text (the HTML→text action), walking the tree without recursion."""

from __future__ import annotations

import re

import lxml.html
from lxml import etree

_SKIP = frozenset({"head", "script", "style", "title", "template", "noscript", "object", "iframe",
                   "svg", "math"})
_BLOCK = frozenset({"p", "div", "section", "article", "header", "footer", "main", "nav", "aside",
                    "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr", "ul", "ol", "dl", "dt", "dd",
                    "blockquote", "pre", "address", "figure", "figcaption", "form", "fieldset",
                    "center", "body", "html"})
_SPACES = re.compile(r"[ \t\r\n\f\u00a0]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


def html_to_text(root: lxml.html.HtmlElement) -> str:
    out: list[str] = []
    pre_depth = 0

    def emit(text: str | None) -> None:
        if not text:
            return
        out.append(text if pre_depth else _SPACES.sub(" ", text))

    def newline(count: int = 1) -> None:
        out.append("\n" * count)

    skipping: etree._Element | None = None
    for event, el in etree.iterwalk(root, events=("start", "end")):
        if not isinstance(el.tag, str):  # comments, processing instructions
            if event == "end" and skipping is None:
                emit(el.tail)
            continue
        tag = el.tag.lower()
        if event == "start":
            if skipping is not None:
                continue
            if tag in _SKIP:
                skipping = el
                continue
            if tag == "pre":
                pre_depth += 1
            if tag in _BLOCK:
                newline()
            elif tag == "li":
                out.append("\n- ")
            elif tag == "br":
                newline()
            elif tag == "hr":
                out.append("\n" + "-" * 40 + "\n")
            elif tag == "img":
                alt = (el.get("alt") or "").strip()
                if alt:
                    emit(f"[{alt}]")
            elif tag in ("td", "th"):
                out.append("\t" if el.getprevious() is not None else "")
            emit(el.text)
            continue
        # end event
        if skipping is not None:
            if el is not skipping:
                continue
            skipping = None
        else:
            if tag == "a":
                href = (el.get("href") or "").strip()
                label = (el.text_content() or "").strip()
                if href and href != label and not href.lower().startswith(("#", "javascript:")):
                    emit(f" <{href}>")
            elif tag == "area" and el.get("alt"):
                emit(f"[{el.get('alt')}]")
            if tag in _BLOCK:
                newline()
            if tag == "pre":
                pre_depth -= 1
        emit(el.tail)
    text = "".join(out)
    lines = [line.rstrip() if "\t" not in line else line.rstrip(" ") for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(line.lstrip(" ") for line in lines)).strip("\n") + "\n"
