"""Without libmagic a file's real type is unknown: it gets SCAN_FAILED and is isolated, never safe."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from mailmoat.scan import filetype
from tests.unit.scan.scanfiles import eml

PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + \
    b"This program cannot be run in DOS mode.\r\r\n$" + b"\x00" * 128


class _Refusing:
    def from_buffer(self, data: bytes) -> str:
        raise RuntimeError("magic_buffer failed")


@pytest.fixture
def _fresh_magic() -> Iterator[None]:
    filetype._load_magic.cache_clear()
    yield
    filetype._load_magic.cache_clear()  # the next test loads the real one again


def _no_module(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(sys.modules, "magic", None)  # `import magic` raises, as without libmagic1
    return "file type unknown: libmagic unavailable (ModuleNotFoundError: "


def _call_raises(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(filetype, "_magic", _Refusing)
    return "file type unknown: libmagic failed (RuntimeError: magic_buffer failed)"


@pytest.mark.usefixtures("_fresh_magic")
@pytest.mark.parametrize("break_magic", [_no_module, _call_raises])
def test_unknown_type_fails_closed(analyse: Any, monkeypatch: pytest.MonkeyPatch,
                                   break_magic: Any) -> None:
    detail = break_magic(monkeypatch)
    report = analyse(eml(("invoice.pdf", PE), ("notes.txt", b"just a note\n")))
    assert [a["filename"] for a in report["attachments"]] == ["invoice.pdf", "notes.txt"]
    for att in report["attachments"]:
        assert "SCAN_FAILED" in att["symbols"]
        assert att["verdict"] != "safe" and att["action"] == "isolate"
    details = [f["detail"] for f in report["findings"] if f["symbol"] == "SCAN_FAILED"]
    assert len(details) == 2 and all(d.startswith(detail) for d in details)


@pytest.mark.usefixtures("_fresh_magic")
def test_a_database_that_cannot_name_the_samples_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """libmagic loaded without its database names everything application/octet-stream."""

    class Blind:
        def __init__(self, mime: bool) -> None: ...

        def from_buffer(self, data: bytes) -> str:
            return "application/octet-stream"

    monkeypatch.setattr("magic.Magic", Blind)
    assert filetype.magic_problem() == ("application/pdf sample named application/octet-stream; "
                                        "application/x-dosexec sample named application/octet-stream")
    assert filetype.detect(PE)[1] == f"libmagic unavailable ({filetype.magic_problem()})"


def test_with_libmagic_the_renamed_pe_is_a_mismatch_not_a_scan_failure(analyse: Any) -> None:
    assert filetype.magic_problem() is None
    att = analyse(eml(("invoice.pdf", PE)))["attachments"][0]
    assert "EXT_MISMATCH" in att["symbols"] and "SCAN_FAILED" not in att["symbols"]
