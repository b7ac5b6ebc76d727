"""Portal helpers that take hostile input: header values, language negotiation, flags, reasons."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailmoat.scan.macros import macro_free_name
from mailmoat.services.downloads import content_disposition, offer
from mailmoat_web.i18n import CATALOG, REASONS, flag, negotiate, reasons

_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9!#$&+.^_`|~%'*-]*$")  # RFC 5987 value-chars, pct-encoded


@given(st.text(max_size=300))
def test_content_disposition_never_breaks_out_of_the_header(name: str) -> None:
    value = content_disposition(name)
    assert "\r" not in value and "\n" not in value and value.isascii()
    fallback = value.split('filename="', 1)[1].split('"; filename*=', 1)[0]
    assert '"' not in fallback and "\\" not in fallback and ";" not in fallback
    assert _TOKEN_CHARS.match(value.split("filename*=UTF-8''", 1)[1])


@given(st.text(max_size=200), st.sampled_from(["ja", "en", "xx"]))
def test_language_negotiation_never_fails(header: str, default: str) -> None:
    assert negotiate(None, None, header, default) in ("ja", "en")


def test_language_order_query_cookie_header_default() -> None:
    assert negotiate("en", "ja", "ja", "ja") == "en"
    assert negotiate(None, "en", "ja", "ja") == "en"
    assert negotiate("fr", None, "fr-CA, en;q=0.8, ja;q=0.9", "en") == "ja"
    assert negotiate(None, None, "de, en;q=0", "ja") == "ja"
    assert negotiate(None, None, None, "en") == "en"


def test_flags_from_iso_codes() -> None:
    assert flag("JP") == "\U0001F1EF\U0001F1F5" and flag("us") == "\U0001F1FA\U0001F1F8"
    assert flag(None) == flag("") == flag("J") == flag("J1") == flag("日本") == ""


def test_every_symbol_of_the_contract_has_a_sentence_in_both_languages() -> None:
    contract = {"ENCRYPTED_ARCHIVE", "ENCRYPTED_OFFICE", "ENCRYPTED_PDF", "VELVETSWEATSHOP",
                "DANGEROUS_EXTENSION", "ARCHIVE_TYPE", "EXT_MISMATCH", "NO_EXTENSION", "MACRO",
                "PDF_ACTIVE_CONTENT", "VIRUS", "ARCHIVE_LIMIT", "SCAN_FAILED"}
    for lang in ("ja", "en"):
        assert contract <= set(REASONS[lang])
    assert set(CATALOG["ja"]) == set(CATALOG["en"])
    assert set(REASONS["ja"]) == set(REASONS["en"])
    assert reasons(["AV_DISABLED", "MACRO", "MACRO"], "en") == ["It contains macros (VBA)."]
    assert reasons(["SOMETHING_NEW"], "ja") == ["確認項目 SOMETHING_NEW に該当しました。"]


def test_macro_free_names() -> None:
    assert macro_free_name("見積.docm") == "見積.docx"
    assert macro_free_name("book.XLSM") == "book.xlsx"
    assert macro_free_name("deck.pptm") == "deck.pptx"
    assert macro_free_name("plain.docx") == "plain.docx"


DOCM = "application/vnd.ms-word.document.macroEnabled.12"
XLSM = "application/vnd.ms-excel.sheet.macroEnabled.12"


@pytest.mark.parametrize(("verdict", "detected_type", "symbols", "actions", "confirm"), [
    ("safe", "application/pdf", [], ("safe", "original", "preview"), False),
    ("safe", "text/plain", [], ("original", "preview"), False),
    ("risky", "application/javascript", ["EXT_DANGEROUS"], ("original",), True),
    ("risky", DOCM, ["MACRO_AUTOEXEC"], ("safe", "original", "macro-removed", "preview"), True),
    ("risky", DOCM, ["VBA_STOMPING"], ("safe", "original", "macro-removed", "preview"), True),
    ("risky", XLSM, ["MACRO", "XLM_MACRO"], ("safe", "original", "preview"), True),
    ("encrypted", "application/zip", ["ENCRYPTED_ARCHIVE"], ("unlock",), False),
    ("unsupported", "application/pdf", ["SCAN_FAILED"], (), False),
    ("danger", DOCM, ["VIRUS", "MACRO"], (), False),
])
def test_what_each_verdict_allows(verdict: str, detected_type: str, symbols: list[str],
                                  actions: tuple[str, ...], confirm: bool) -> None:
    allowed = offer(verdict, detected_type, symbols)
    assert allowed.actions == actions
    assert allowed.needs_confirm is confirm
    assert allowed.lists_members is (verdict != "encrypted")
    assert offer(verdict, detected_type, symbols, stored=False).actions == ()  # deleted: nothing
