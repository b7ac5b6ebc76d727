"""The doctor's checks, each with a passing and a failing case: DNS from zone files, the network
parts against real loopback servers (aiosmtpd with STARTTLS and certificates from a CA made in
the test, a clamd-like VERSION server, an HTTP(S) server), certificates from files."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from mailmoat.adapters.clamd import ClamdAntivirus
from mailmoat.adapters.dns import ZoneFileResolver
from mailmoat.adapters.http_probe import HttpClientProbe
from mailmoat.adapters.smtp_probe import SmtplibTlsProbe
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.doctor import Result, Status, checks
from mailmoat.rewrite.seal import ensure_local_key
from tests.unit.doctor_servers import (
    DoctorCa,
    clamd_server,
    clamd_version,
    http_server,
    smtp_server,
)

NOW = datetime.datetime.now(datetime.UTC)
GATEWAY = "mx.gateway.test"


@pytest.fixture
def ca(tmp_path: Path) -> DoctorCa:
    return DoctorCa(tmp_path)


def statuses(results: list[Result]) -> list[Status]:
    return [r.status for r in results]


# --- MX --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mx", "expected"), [
    (["10 mx.gateway.test"], [Status.OK]),
    (["10 mx.gateway.test", "20 contoso-test.mail.protection.outlook.com"], [Status.OK, Status.FAIL]),
    (["10 mail.elsewhere.test"], [Status.FAIL]),
])
def test_mx_must_name_the_gateway(mx: list[str], expected: list[Status]) -> None:
    zone = ZoneFileResolver({"corp.test": {"MX": mx}, GATEWAY: {"A": ["192.0.2.10"]},
                             "mail.elsewhere.test": {"A": ["198.51.100.7"]}})
    results = checks.check_mx(zone, "corp.test", [GATEWAY])
    assert statuses(results) == expected
    assert all("Point every MX of corp.test at the gateway" in r.fix
               for r in results if r.status is Status.FAIL)


def test_mx_of_a_domain_without_records_fails() -> None:
    results = checks.check_mx(ZoneFileResolver({}), "corp.test", [GATEWAY])
    assert statuses(results) == [Status.WARN]  # no MX, no address: takes no mail


# --- ARC key ---------------------------------------------------------------------------------

def test_arc_key_published_matches_the_sealing_key(tmp_path: Path) -> None:
    key = ensure_local_key(tmp_path / "arc", "mailmoat", "gw.test")
    zone = ZoneFileResolver({"mailmoat._domainkey.gw.test": {"TXT": [key.txt_value.decode()]}})
    result = checks.check_arc_key(zone, "mailmoat", "gw.test", key.public_b64)
    assert result.status is Status.OK


def test_arc_key_published_is_another_key(tmp_path: Path) -> None:
    sealing = ensure_local_key(tmp_path / "a", "mailmoat", "gw.test")
    other = ensure_local_key(tmp_path / "b", "mailmoat", "gw.test")
    zone = ZoneFileResolver({"mailmoat._domainkey.gw.test": {"TXT": [other.txt_value.decode()]}})
    result = checks.check_arc_key(zone, "mailmoat", "gw.test", sealing.public_b64)
    assert result.status is Status.FAIL
    assert "another key" in result.detail
    assert sealing.public_b64 in result.fix


def test_arc_key_not_published(tmp_path: Path) -> None:
    key = ensure_local_key(tmp_path / "arc", "mailmoat", "gw.test")
    result = checks.check_arc_key(ZoneFileResolver({}), "mailmoat", "gw.test", key.public_b64)
    assert result.status is Status.FAIL
    assert result.fix.startswith("publish TXT mailmoat._domainkey.gw.test")


def test_arc_key_lookup_timeout_is_a_warning() -> None:
    zone = ZoneFileResolver({"mailmoat._domainkey.gw.test": "TIMEOUT"})
    assert checks.check_arc_key(zone, "mailmoat", "gw.test", "MIIB").status is Status.WARN


# --- clamd ------------------------------------------------------------------------------------

def _clamd(address: str) -> ClamdAntivirus:
    return ClamdAntivirus(address, timeout=5, connect_timeout=2)


def test_clamd_with_fresh_signatures() -> None:
    with clamd_server(clamd_version(NOW - datetime.timedelta(hours=5))) as address:
        result = checks.check_clamd(address, _clamd(address).version, required=True, now=NOW)
    assert result.status is Status.OK, result
    assert "ClamAV 1.0.7/27479" in result.detail


def test_clamd_with_old_signatures_warns() -> None:
    with clamd_server(clamd_version(NOW - datetime.timedelta(days=9))) as address:
        result = checks.check_clamd(address, _clamd(address).version, required=True, now=NOW)
    assert result.status is Status.WARN
    assert "9 days old" in result.detail
    assert "freshclam" in result.fix


@pytest.mark.parametrize(("required", "expected"), [(True, Status.FAIL), (False, Status.WARN)])
def test_clamd_that_does_not_answer(required: bool, expected: Status) -> None:
    with clamd_server(None) as address:
        result = checks.check_clamd(address, _clamd(address).version, required=required, now=NOW)
    assert result.status is expected
    assert "does not answer" in result.detail


def test_clamd_not_configured_in_production_fails() -> None:
    result = checks.check_clamd(None, lambda: "", required=True, now=NOW)
    assert result.status is Status.FAIL


# --- libmagic ---------------------------------------------------------------------------------

def test_libmagic_loads_here() -> None:
    from mailmoat.scan.filetype import magic_problem

    assert checks.check_libmagic(magic_problem).status is Status.OK


def test_libmagic_that_does_not_load_fails() -> None:
    result = checks.check_libmagic(lambda: "failed to find libmagic")
    assert result.status is Status.FAIL
    assert "libmagic1" in result.fix


# --- delivery hosts -------------------------------------------------------------------------

def _tenant(port: int, *, require_tls: bool = False) -> TenantConfig:
    return TenantConfig(name="corp", domains=["corp.test"], delivery=DeliveryConfig(
        mode="smtp", host="127.0.0.1", port=port, require_tls=require_tls))


def _deliver(ca: DoctorCa, port: int, *, require_tls: bool = False) -> list[Result]:
    probe = SmtplibTlsProbe(helo="gw.test", timeout=5, context=ca.client_context())
    return checks.check_delivery(probe, _tenant(port, require_tls=require_tls),
                                 [("127.0.0.1", port)], mode="smtp", now=NOW)


def test_delivery_host_with_a_valid_certificate(ca: DoctorCa) -> None:
    with smtp_server(ca.issue("mbox", days=90)) as port:
        results = _deliver(ca, port)
    assert statuses(results) == [Status.OK, Status.OK]
    assert "STARTTLS TLSv1." in results[0].detail
    assert results[1].name == "certificate"


def test_delivery_host_certificate_expiring_in_3_days_warns(ca: DoctorCa) -> None:
    with smtp_server(ca.issue("soon", days=3)) as port:
        results = _deliver(ca, port)
    assert statuses(results) == [Status.OK, Status.WARN]
    assert "in 3 days" in results[1].detail


def test_delivery_host_certificate_for_another_name_fails(ca: DoctorCa) -> None:
    with smtp_server(ca.issue("wrong", days=90, name="mail.other.test")) as port:
        results = _deliver(ca, port)
    assert statuses(results) == [Status.FAIL]
    assert "does not verify" in results[0].detail


def test_delivery_host_certificate_from_an_unknown_ca_fails(tmp_path: Path, ca: DoctorCa) -> None:
    (tmp_path / "other").mkdir()
    stranger = DoctorCa(tmp_path / "other")
    with smtp_server(stranger.issue("stranger", days=90)) as port:
        results = _deliver(ca, port)
    assert statuses(results) == [Status.FAIL]


@pytest.mark.parametrize(("require_tls", "expected"), [(False, Status.WARN), (True, Status.FAIL)])
def test_delivery_host_without_starttls(ca: DoctorCa, require_tls: bool, expected: Status) -> None:
    with smtp_server(None) as port:
        results = _deliver(ca, port, require_tls=require_tls)
    assert statuses(results) == [expected]
    assert "STARTTLS is not offered" in results[0].detail


def test_delivery_host_that_refuses_the_connection(ca: DoctorCa) -> None:
    from tests.conftest import free_port

    results = _deliver(ca, free_port())
    assert statuses(results) == [Status.FAIL]
    assert "no SMTP session" in results[0].detail


def test_maildir_delivery_is_skipped() -> None:
    tenant = TenantConfig(name="demo", domains=["demo.test"])
    results = checks.check_delivery(SmtplibTlsProbe(helo="x"), tenant, [], mode="maildir", now=NOW)
    assert statuses(results) == [Status.SKIP]


# --- portal ------------------------------------------------------------------------------------

def test_portal_reachable() -> None:
    with http_server(200) as url:
        results = checks.check_portal(HttpClientProbe(timeout=5), url, NOW)
    assert statuses(results) == [Status.OK]


def test_portal_https_with_a_certificate_expiring_in_3_days(ca: DoctorCa) -> None:
    with http_server(200, ca.issue("portal", days=3)) as url:
        results = checks.check_portal(HttpClientProbe(timeout=5, context=ca.client_context()), url, NOW)
    assert statuses(results) == [Status.OK, Status.WARN]
    assert results[1].name == "certificate"


@pytest.mark.parametrize("status", [500, 404])
def test_portal_answering_an_error_fails(status: int) -> None:
    with http_server(status) as url:
        results = checks.check_portal(HttpClientProbe(timeout=5), url, NOW)
    assert statuses(results) == [Status.FAIL]
    assert f"HTTP {status}" in results[0].detail


def test_portal_not_reachable() -> None:
    from tests.conftest import free_port

    results = checks.check_portal(HttpClientProbe(timeout=5), f"http://127.0.0.1:{free_port()}", NOW)
    assert statuses(results) == [Status.FAIL]
    assert checks.check_portal(HttpClientProbe(), None, NOW)[0].status is Status.FAIL


# --- certificate files, disk ----------------------------------------------------------------

@pytest.mark.parametrize(("days", "expected"), [(90, Status.OK), (3, Status.WARN), (-1, Status.FAIL)])
def test_listener_certificate_expiry(ca: DoctorCa, days: float, expected: Status) -> None:
    pair = ca.issue(f"listener{days}", days=days)
    assert checks.check_certificate_file(pair.cert, NOW).status is expected


def test_listener_certificate_unreadable(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    assert checks.check_certificate_file(tmp_path / "junk.pem", NOW).status is Status.FAIL
    assert checks.check_certificate_file(tmp_path / "missing.pem", NOW).status is Status.FAIL


def test_disk_space(tmp_path: Path) -> None:
    assert checks.check_disk(tmp_path / "not-yet", warn_free_percent=0.0,
                             fail_free_percent=0.0).status is Status.OK
    # Thresholds above any free share: the same disk judged low.
    assert checks.check_disk(tmp_path, warn_free_percent=101.0, fail_free_percent=0.0).status is Status.WARN
    result = checks.check_disk(tmp_path, warn_free_percent=101.0, fail_free_percent=101.0)
    assert result.status is Status.FAIL
    assert "GiB free" in result.detail


def test_local_doctor_finds_the_clamd_that_serve_started(tmp_path: Path) -> None:
    from mailmoat.doctor.cli import local_deployment
    from mailmoat.settings import Settings

    settings = Settings(data_dir=tmp_path, dns_zone=None)
    assert local_deployment(settings, None, ZoneFileResolver({})).clamd_address is None
    (tmp_path / "clamd").mkdir()
    (tmp_path / "clamd" / "clamd.sock").touch()
    found = local_deployment(settings, None, ZoneFileResolver({})).clamd_address
    assert found == str(tmp_path / "clamd" / "clamd.sock")


def test_local_doctor_checks_the_listener_certificate_in_use(tmp_path: Path) -> None:
    from mailmoat.doctor.cli import local_deployment
    from mailmoat.settings import Settings

    def cert(**values: object) -> Path | None:
        return local_deployment(Settings(data_dir=tmp_path, **values), None,  # type: ignore[arg-type]
                                ZoneFileResolver({})).tls_cert

    assert cert() is None
    assert cert(tls_cert=tmp_path / "mine.pem") == tmp_path / "mine.pem"
    assert cert(tls_self_signed=True) is None  # not generated yet: nothing to look at
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_text("-")
    assert cert(tls_self_signed=True) == tmp_path / "tls" / "cert.pem"
