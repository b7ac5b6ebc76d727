"""Whatever the bytes, the engine answers with a verdict and never raises (DESIGN §7)."""

from __future__ import annotations

import io

import py7zr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.context import Verdict
from mailmoat.scan.engine import Engine, ResultCache
from mailmoat.scan.lists import Lists
from mailmoat.settings import Limits
from tests.unit.scan.scanfiles import make_lzh, make_ooxml, make_rar4, make_zip
from tests.unit.scan.vbafiles import legacy_excel, vba_project_bin

HEADERS = [b"PK\x03\x04", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00",
           b"%PDF-1.4\n", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\x1f\x8b\x08", b"BZh9",
           b"\xfd7zXZ\x00", b"MZ", b"{\\rtf1", b""]


def _seven() -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as z:
        z.writestr(b"hello" * 100, "a.txt")
    return buf.getvalue()


VALID = [make_zip({"a.exe": b"MZ", "b.txt": b"x" * 500}), _seven(), make_rar4({"a.exe": b"MZ"}),
         make_lzh({b"a.exe": b"MZ"}), make_ooxml("word"), vba_project_bin(), legacy_excel(0x1111)]

ENGINE = Engine(Limits(scan_seconds=5), cache=ResultCache(maxsize=1))


def _check(data: bytes, name: str) -> None:
    result = ENGINE.analyse(data, name, Lists())
    assert isinstance(result.verdict, Verdict)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HEADERS), st.binary(max_size=2048))
def test_random_bytes_behind_known_magic(header, tail):
    _check(header + tail, "x.bin")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(VALID))), st.data())
def test_damaged_real_files(which, data):
    original = VALID[which]
    cut = data.draw(st.integers(min_value=0, max_value=len(original)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(len(original) - 1, 0)),
                                         st.integers(0, 255)), max_size=8))
    damaged = bytearray(original[:cut] if data.draw(st.booleans()) else original)
    for pos, value in flips:
        if pos < len(damaged):
            damaged[pos] = value
    _check(bytes(damaged), "x.zip")


@pytest.mark.parametrize("blob", VALID)
def test_valid_builders_are_themselves_fine(blob):
    _check(blob, "x.bin")
