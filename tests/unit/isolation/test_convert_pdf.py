"""convert-pdf in the isolate stage (issue 16): the PDF replaces the file, the original goes to
the portal; no converter, a failed conversion or an unsafe PDF leaves the original isolated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailmoat.config import RuleConfig
from mailmoat.convert import ConversionError
from tests.unit.isolation.builders import analyse, clean_pdf, make_runtime, message
from tests.unit.isolation.test_isolate import TOKEN_URL, parts, text_of

DOCX = b"PK\x03\x04 not really a docx, the fake converter does not care"


@dataclass
class FakeConverter:
    result: bytes | Exception
    calls: list[str] = field(default_factory=list)

    def convert(self, data: bytes, filename: str) -> bytes:
        self.calls.append(filename)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture
def runtime(tmp_path: Path):
    runtime = make_runtime(tmp_path / "var")
    tenant = runtime.services.config.tenants[0]
    tenant.rules = [RuleConfig(name="to-pdf", action="convert-pdf")]
    return runtime


def _files(raw: bytes) -> list[tuple[str, str | None, bytes]]:
    return [(c, n, d) for c, n, d in parts(raw) if n]


def test_the_pdf_replaces_the_file_and_the_original_goes_to_the_portal(runtime) -> None:
    pdf = clean_pdf()
    runtime.services.converter = converter = FakeConverter(pdf)
    ctx = analyse(runtime, message(("見積.docx", DOCX, "application/octet-stream")))
    assert converter.calls == ["見積.docx"]
    assert ctx.has("CONVERTED_TO_PDF") and not ctx.has("CONVERT_FAILED")
    for out in ctx.outputs.values():
        assert _files(out) == [("application/pdf", "見積.pdf", pdf)]
        notice = text_of(out, "text/plain")
        assert "PDF に変換して添付しています" in notice and "見積.docx → 見積.pdf" in notice
        assert TOKEN_URL.search(notice)
    [record] = runtime.services.isolation.files(ctx.id)
    assert record.filename == "見積.docx" and runtime.services.blobs.get(record.blob_key) == DOCX


@pytest.mark.parametrize("error", [ConversionError("LibreOffice did not convert it"),
                                   RuntimeError("converter crashed")])
def test_a_converter_that_raises_leaves_the_original_isolated(runtime, error) -> None:
    runtime.services.converter = FakeConverter(error)
    ctx = analyse(runtime, message(("a.docx", DOCX, "application/octet-stream")))
    [failed] = [f for f in ctx.findings if f.symbol == "CONVERT_FAILED"]
    assert str(error) in failed.detail and not ctx.has("CONVERTED_TO_PDF")
    for out in ctx.outputs.values():
        assert _files(out) == []
    [record] = runtime.services.isolation.files(ctx.id)
    assert record.action == "isolate" and runtime.services.blobs.get(record.blob_key) == DOCX


def test_a_converted_pdf_that_is_not_safe_stays_out_of_the_message(runtime) -> None:
    from tests.unit.isolation.builders import EICAR_LIKE

    runtime.services.converter = FakeConverter(b"%PDF-1.4\n" + EICAR_LIKE + b"\n%%EOF\n")
    ctx = analyse(runtime, message(("a.docx", DOCX, "application/octet-stream")))
    [failed] = [f for f in ctx.findings if f.symbol == "CONVERT_FAILED"]
    assert "the PDF is" in failed.detail
    assert all(_files(out) == [] for out in ctx.outputs.values())


def test_no_converter_is_convert_unavailable(runtime) -> None:
    runtime.services.converter = None
    ctx = analyse(runtime, message(("a.docx", DOCX, "application/octet-stream")))
    assert ctx.has("CONVERT_UNAVAILABLE") and not ctx.has("CONVERTED_TO_PDF")
    assert all(_files(out) == [] for out in ctx.outputs.values())


def test_pdf_into_portal_only_isolates_the_file(runtime) -> None:
    runtime.services.config.tenants[0].rules = [
        RuleConfig(name="to-pdf", action="convert-pdf", pdf_into="portal")]
    runtime.services.converter = converter = FakeConverter(clean_pdf())
    ctx = analyse(runtime, message(("a.docx", DOCX, "application/octet-stream")))
    assert converter.calls == [] and not ctx.has("CONVERT_FAILED")
    assert all(_files(out) == [] for out in ctx.outputs.values())
    assert len(runtime.services.isolation.files(ctx.id)) == 1


def test_a_file_type_that_does_not_convert_is_isolated_with_the_reason(runtime) -> None:
    runtime.services.converter = converter = FakeConverter(clean_pdf())
    ctx = analyse(runtime, message(("a.bin", b"\x00\x01binary", "application/octet-stream")))
    if not ctx.attachments or ctx.attachments[0].action != "convert":
        pytest.skip("policy keeps this file; nothing to convert")
    assert converter.calls == [] and ctx.has("CONVERT_UNAVAILABLE")


def test_original_from_ips_validates_and_matches_ipv4_and_ipv6() -> None:
    from pydantic import ValidationError

    from mailmoat.config import TenantConfig

    tenant = TenantConfig(name="t", domains=["t.example"],
                          original_from_ips=["192.0.2.0/24", "2001:db8::/32"])
    assert tenant.original_allowed("192.0.2.7") and tenant.original_allowed("::ffff:192.0.2.7")
    assert tenant.original_allowed("2001:db8::1")
    assert not tenant.original_allowed("198.51.100.1") and not tenant.original_allowed("2001:db9::1")
    assert not tenant.original_allowed(None) and not tenant.original_allowed("garbage")
    assert TenantConfig(name="t", domains=["t.example"]).original_allowed(None)
    with pytest.raises(ValidationError):
        TenantConfig(name="t", domains=["t.example"], original_from_ips=["not-a-network"])
