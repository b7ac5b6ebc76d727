"""Writing text back: CP50220-style ISO-2022-JP, strict codecs per label, UTF-8 only as a last resort."""

from __future__ import annotations

import pytest

from mailmoat.charsets import decode_bytes
from mailmoat.rewrite.bodytext import encode_iso2022jp, encode_text


def _cp932_double_byte() -> list[str]:
    chars = []
    for lead in [*range(0x81, 0xA0), *range(0xE0, 0xF0), *range(0xFA, 0xFD)]:
        for trail in range(0x40, 0xFD):
            try:
                chars.append(bytes((lead, trail)).decode("cp932"))
            except UnicodeDecodeError:
                continue
    return chars


def test_every_cp932_character_round_trips_through_iso2022jp() -> None:
    # NEC special rows (①, ㈱) and IBM extensions (ⅰ, 髙, 﨑) included: Outlook sends them.
    failures = [ch for ch in _cp932_double_byte()
                if decode_bytes(encode_iso2022jp(f"a{ch}b"), "iso-2022-jp") != f"a{ch}b"]
    assert failures == []


@pytest.mark.parametrize("text", ["ｶﾀｶﾅ", "😀", "¥100", "\x1b$B"])
def test_iso2022jp_refuses_what_it_cannot_carry(text: str) -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_iso2022jp(text)


@pytest.mark.parametrize(("text", "charset", "label"), [
    ("【注意】①", "ISO-2022-JP", "ISO-2022-JP"),
    ("【注意】①", "Shift_JIS", "Shift_JIS"),  # written as CP932, as every client reads it
    ("【注意】①", "euc-jp", "utf-8"),  # strict EUC-JP has no ①
    ("【注意】", "euc-jp", "euc-jp"),
    ("【注意】", "iso-8859-1", "utf-8"),
    ("【注意】", "x-no-such-charset", "utf-8"),
    ("【注意】", "utf-16", "utf-8"),
    ("plain", None, "us-ascii"),
    ("ｶﾀｶﾅ", "iso-2022-jp", "utf-8"),
])
def test_encode_text_keeps_the_label_when_it_can(text: str, charset: str | None,
                                                 label: str) -> None:
    data, used = encode_text(text, charset)
    assert used == label
    assert decode_bytes(data, used) == text
