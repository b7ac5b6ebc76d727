"""The warning banner: per-tenant ja/en templates rendered as text and as Outlook/Gmail-safe HTML.

Templates are looked up first in `<data_dir>/templates/<tenant>/`, then in the packaged
`mailmoat/templates/` (banner_ja.txt, banner_en.txt, banner_links_*.txt, banner.html).
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import lxml.html

from mailmoat.context import AuthResult
from mailmoat.rewrite.defang import defang_text
from mailmoat.rewrite.htmldoc import HtmlDoc, body_of, xml_safe

_FAILED = frozenset({"fail", "softfail", "permerror", "temperror", "policy"})
_SEPARATOR = re.compile(r"^[\s━─=\-_*#]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_SENDER = 200


@dataclass(frozen=True, slots=True)
class BannerFacts:
    """What the banner says; every value here is untrusted and escaped where it is inserted."""

    sender: str
    reasons: str
    links_disabled: bool
    language: str = "ja"


@dataclass(frozen=True, slots=True)
class Banner:
    text: str  # ends with a blank line, to sit above the original text
    html: str  # one <table> element


def failure_reasons(auth: AuthResult) -> str:
    """`SPF: fail, DMARC: fail` — the methods that failed, or all three when none did."""
    pairs = [("SPF", auth.spf), ("DKIM", auth.dkim), ("DMARC", auth.dmarc)]
    failed = [f"{name}: {value}" for name, value in pairs if value.lower() in _FAILED]
    return ", ".join(failed or [f"{name}: {value}" for name, value in pairs])


def display_sender(value: str | None) -> str:
    """The From header as the recipient should see it in the banner: one line, bounded, and
    with any URL in a display name defanged (a name like "https://bank.example" is a lure)."""
    text = " ".join(_CONTROL.sub(" ", value or "").split()) or "(unknown)"
    if len(text) > _MAX_SENDER:
        text = text[: _MAX_SENDER - 1] + "…"
    return defang_text(text)


@lru_cache(maxsize=64)
def _read_template(name: str, dirs: tuple[Path, ...]) -> str:
    for directory in dirs:
        candidate = directory / name
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return resources.files("mailmoat").joinpath("templates", name).read_text(encoding="utf-8")


def _render_lines(template: str, values: dict[str, str]) -> list[str]:
    lines: list[str] = []
    for raw_line in template.splitlines():
        rendered = string.Template(raw_line).safe_substitute(values).rstrip()
        if not rendered.strip() and raw_line.strip():
            continue  # a line that was only an empty placeholder (e.g. $links)
        lines.append(rendered)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def build_banner(facts: BannerFacts, template_dirs: Sequence[Path] = ()) -> Banner:
    dirs = tuple(template_dirs)
    language = facts.language if facts.language in ("ja", "en") else "ja"
    links = links_en = ""
    if facts.links_disabled:
        links = _read_template(f"banner_links_{language}.txt", dirs).strip()
        links_en = _read_template("banner_links_en.txt", dirs).strip()
    values = {"sender": display_sender(facts.sender), "reasons": facts.reasons,
              "links": links, "links_en": links_en}
    lines = _render_lines(_read_template(f"banner_{language}.txt", dirs), values)
    text = "\n".join(lines) + "\n\n"
    content = [line for line in lines if line.strip() and not _SEPARATOR.match(line)]
    title, rest = (content[0], content[1:]) if content else ("", [])
    html_values = {"title": html.escape(title), "body": "<br>".join(html.escape(x) for x in rest)}
    fragment = string.Template(_read_template("banner.html", dirs)).safe_substitute(html_values)
    return Banner(text=text, html=fragment.strip())


def insert_html_banner(doc: HtmlDoc, banner: Banner) -> None:
    """The banner becomes the first thing in <body>, before any text the body starts with."""
    element = lxml.html.fragment_fromstring(xml_safe(banner.html))
    body = body_of(doc.root)
    element.tail = body.text
    body.text = None
    body.insert(0, element)
