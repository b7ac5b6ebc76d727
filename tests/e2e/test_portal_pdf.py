"""The portal's "Download as PDF" and the tenant's original_from_ips (issue 16)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mailmoat.config import RuleConfig
from mailmoat.convert import ConversionError
from mailmoat.runtime import Runtime
from mailmoat_web.app import create_app
from tests.e2e.test_portal import article, token_for
from tests.unit.isolation.builders import analyse, clean_pdf, make_runtime, message
from tests.unit.isolation.test_convert_pdf import DOCX, FakeConverter
from tests.webforms import form_csrf


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    runtime = make_runtime(tmp_path / "var")
    runtime.services.config.tenants[0].rules = [
        RuleConfig(name="to-pdf", action="convert-pdf", pdf_into="portal")]
    return runtime


def _portal(runtime: Runtime, client: tuple[str, int] = ("192.0.2.10", 50000)
            ) -> tuple[TestClient, str, str]:
    ctx = analyse(runtime, message(("見積.docx", DOCX, "application/octet-stream")))
    [att] = ctx.attachments
    return TestClient(create_app(runtime), client=client), token_for(ctx), att.path


def _post(client: TestClient, token: str, path: str, what: str, **form: str):
    csrf = form_csrf(client.get(f"/m/{token}").text)
    return client.post(f"/m/{token}/f/{path}/{what}", data={"csrf": csrf, **form})


def test_the_pdf_button_converts_rescans_and_serves_an_attachment(runtime: Runtime) -> None:
    pdf = clean_pdf()
    runtime.services.converter = converter = FakeConverter(pdf)
    client, token, path = _portal(runtime)
    assert "PDF に変換してダウンロード" in article(client.get(f"/m/{token}").text, "見積.docx")
    response = _post(client, token, path, "pdf")
    assert response.status_code == 200 and response.content == pdf
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith('attachment; filename="__.pdf"')
    assert "%E8%A6%8B%E7%A9%8D.pdf" in response.headers["content-disposition"]
    assert converter.calls == ["見積.docx"]


def test_no_converter_offers_no_pdf_button(runtime: Runtime) -> None:
    runtime.services.converter = None
    client, token, path = _portal(runtime)
    assert "/pdf" not in article(client.get(f"/m/{token}").text, "見積.docx")
    assert _post(client, token, path, "pdf").status_code == 404


def test_a_failed_conversion_renders_the_error_page_and_logs(runtime: Runtime, caplog) -> None:
    runtime.services.converter = FakeConverter(ConversionError("LibreOffice did not convert it"))
    client, token, path = _portal(runtime)
    with caplog.at_level(logging.WARNING, logger="mailmoat.portal"):
        response = _post(client, token, path, "pdf")
    assert response.status_code == 422 and "PDF に変換できませんでした" in response.text
    assert any("LibreOffice did not convert it" in getattr(r, "reason", "") for r in caplog.records)


def test_the_pdf_route_needs_csrf(runtime: Runtime) -> None:
    runtime.services.converter = FakeConverter(clean_pdf())
    client, token, path = _portal(runtime)
    assert client.post(f"/m/{token}/f/{path}/pdf", data={"csrf": "x"}).status_code == 403


@pytest.mark.parametrize(("networks", "client_ip", "allowed"), [
    (["192.0.2.0/24"], "192.0.2.10", True),
    (["192.0.2.0/24"], "198.51.100.7", False),
    (["2001:db8:1::/48"], "2001:db8:1::42", True),
    (["2001:db8:1::/48"], "2001:db8:2::42", False),
    ([], "198.51.100.7", True),
])
def test_original_from_ips_allows_the_original_only_from_those_networks(
        runtime: Runtime, caplog, networks: list[str], client_ip: str, allowed: bool) -> None:
    pdf = clean_pdf()
    runtime.services.converter = FakeConverter(pdf)
    tenant = runtime.services.config.tenants[0]
    tenant.original_from_ips = networks
    client, token, path = _portal(runtime, client=(client_ip, 40000))
    with caplog.at_level(logging.WARNING, logger="mailmoat.portal"):
        original = _post(client, token, path, "download", kind="original", confirm="1")
    if allowed:
        assert original.status_code == 200 and original.content == DOCX
        assert not [r for r in caplog.records if r.getMessage().startswith("original refused")]
    else:
        assert original.status_code == 403 and original.content != DOCX
        assert "登録されたネットワーク" in original.text
        [line] = [r for r in caplog.records if r.getMessage().startswith("original refused")]
        assert (line.tenant, line.path) == (tenant.name, path)  # type: ignore[attr-defined]
        assert line.message_id and line.client_network != "-"  # type: ignore[attr-defined]
        assert client_ip.rsplit(":" if ":" in client_ip else ".", 1)[0] in line.client_network  # type: ignore[attr-defined]
        assert token not in repr(line.__dict__)
        unlock = _post(client, token, path, "unlock", password="x")
        assert unlock.status_code in (403, 404)  # refused or not an encrypted file: never opened
    # The PDF copy works from anywhere.
    assert _post(client, token, path, "pdf").content == pdf
