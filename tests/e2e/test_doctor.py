"""`mailmoat doctor` as an operator runs it: a subprocess against a zone file and real loopback
servers (a tenant mailbox host on aiosmtpd with STARTTLS, a clamd-like VERSION server, the
portal's HTTP server), locally and with MAILMOAT_RUNTIME=aws. The exit code says whether a
check failed; every FAIL line carries its fix; what DNS returns is printed escaped."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailmoat.rewrite.seal import ensure_local_key
from tests.conftest import ROOT
from tests.unit.doctor_servers import DoctorCa, clamd_server, clamd_version, http_server, smtp_server

GATEWAY = "mx.gateway.test"
NOW = datetime.datetime.now(datetime.UTC)
CHECKS = ("mx", "arc-key", "clamd", "libmagic", "delivery", "portal", "certificate", "disk")


@dataclass
class Site:
    tmp: Path
    ca: DoctorCa
    servers: ExitStack

    def config(self, delivery_port: int) -> Path:
        path = self.tmp / "tenants.toml"
        path.write_text(f"""
[[tenant]]
name = "corp"
domains = ["corp.test"]
[tenant.delivery]
mode = "smtp"
host = "127.0.0.1"
port = {delivery_port}
""", encoding="utf-8")
        return path

    def zone(self, records: dict[str, object]) -> Path:
        path = self.tmp / "zone.json"
        path.write_text(json.dumps(records), encoding="utf-8")
        return path

    def arc_key(self, name: str) -> tuple[Path, str]:
        key = ensure_local_key(self.tmp / name, "mailmoat", "gw.test")
        return key.path, key.txt_value.decode()

    def doctor(self, env: dict[str, str], *args: str,
               gateway: str | None = GATEWAY) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MAILMOAT_", "AWS_"))}
        base.update({"MAILMOAT_DATA_DIR": str(self.tmp / "var"), "MAILMOAT_SMTP_HOSTNAME": "gw.test",
                     "MAILMOAT_ARC_DOMAIN": "gw.test", "SSL_CERT_FILE": str(self.ca.ca_file)})
        return subprocess.run([sys.executable, "-m", "mailmoat.local.cli", "doctor", "--timeout", "5",
                               *(["--gateway-host", gateway] if gateway else []), "--disk-warn-percent", "0",
                               "--disk-fail-percent", "0", *args],
                              cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=90)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with ExitStack() as servers:
        yield Site(tmp_path, DoctorCa(tmp_path), servers)


def lines(result: subprocess.CompletedProcess[str], status: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(status)]


def test_a_healthy_local_deployment_passes_every_check(site: Site) -> None:
    mailbox = site.servers.enter_context(smtp_server(site.ca.issue("mailbox", days=90)))
    clamd = site.servers.enter_context(clamd_server(clamd_version(NOW - datetime.timedelta(hours=3))))
    portal = site.servers.enter_context(http_server(200))
    key_file, record = site.arc_key("arc")
    zone = site.zone({"corp.test": {"MX": [f"10 {GATEWAY}"]}, GATEWAY: {"A": ["192.0.2.10"]},
                      "mailmoat._domainkey.gw.test": {"TXT": [record]}})
    result = site.doctor({"MAILMOAT_CONFIG": str(site.config(mailbox)), "MAILMOAT_ARC_KEY_FILE": str(key_file),
                          "MAILMOAT_CLAMD_SOCKET": clamd, "MAILMOAT_PORTAL_BASE_URL": portal,
                          "MAILMOAT_TLS_CERT": str(site.ca.issue("listener", days=200).cert)},
                         "--dns-zone", str(zone))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result, "FAIL") == [] and lines(result, "WARN") == [], result.stdout
    ok = lines(result, "OK")
    for name in CHECKS:
        assert any(line.split()[1] == name for line in ok), (name, result.stdout)
    assert result.stdout.rstrip().endswith("mailmoat doctor (local): 9 OK"), result.stdout


def test_a_broken_local_deployment_fails_with_the_fixes(site: Site) -> None:
    mailbox = site.servers.enter_context(smtp_server(site.ca.issue("mailbox", days=3)))
    clamd = site.servers.enter_context(clamd_server(None))  # takes the connection, never answers
    portal = site.servers.enter_context(http_server(500))
    key_file, _ = site.arc_key("arc")
    _, other_record = site.arc_key("old-arc")
    zone = site.zone({"corp.test": {"MX": ["10 mail.corp-old.test"]},
                      "mail.corp-old.test": {"A": ["198.51.100.7"]}, GATEWAY: {"A": ["192.0.2.10"]},
                      "mailmoat._domainkey.gw.test": {"TXT": [other_record]}})
    result = site.doctor({"MAILMOAT_CONFIG": str(site.config(mailbox)), "MAILMOAT_ARC_KEY_FILE": str(key_file),
                          "MAILMOAT_CLAMD_SOCKET": clamd, "MAILMOAT_PORTAL_BASE_URL": portal,
                          "MAILMOAT_MODE": "production",
                          "MAILMOAT_TLS_CERT": str(site.ca.issue("listener", days=-2).cert)},
                         "--dns-zone", str(zone))
    assert result.returncode == 1, result.stdout + result.stderr
    failed = {line.split()[1] for line in lines(result, "FAIL")}
    assert failed == {"mx", "arc-key", "clamd", "portal", "certificate"}, result.stdout
    warned = lines(result, "WARN")
    assert any("certificate" in line and "127.0.0.1" in line for line in warned), result.stdout
    out = result.stdout.splitlines()
    for i, line in enumerate(out):
        if line.startswith("FAIL"):
            assert out[i + 1].strip().startswith("fix: "), line


def test_json_output_and_escaped_dns_values(site: Site) -> None:
    zone = site.zone({"corp.test": {"MX": ["10 evil\x1b]0;pwned\x07.test"]}})
    result = site.doctor({"MAILMOAT_CONFIG": str(site.config(25))}, "--dns-zone", str(zone))
    assert result.returncode == 1
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "evil\\u001b]0;pwned\\u0007.test" in result.stdout
    report = json.loads(site.doctor({"MAILMOAT_CONFIG": str(site.config(25))}, "--dns-zone", str(zone),
                                    "--json").stdout)
    assert report["runtime"] == "local" and report["failed"] is True
    assert {c["check"] for c in report["checks"]} >= {"mx", "arc-key", "portal", "disk"}


def _aws_env(site: Site, mailbox: int, portal: str, key_file: Path) -> dict[str, str]:
    return {"MAILMOAT_RUNTIME": "aws", "MAILMOAT_INGRESS": "receipt-rules", "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "MAILMOAT_CONFIG": str(site.config(mailbox)), "MAILMOAT_ARC_KEY_FILE": str(key_file),
            "MAILMOAT_PORTAL_BASE_URL": portal}


@pytest.mark.parametrize(("mx", "code"), [("inbound-smtp.eu-west-1.amazonaws.com", 0),
                                          ("mail.corp-old.test", 1)])
def test_the_aws_stack(site: Site, mx: str, code: int) -> None:
    mailbox = site.servers.enter_context(smtp_server(site.ca.issue("mailbox", days=90)))
    portal = site.servers.enter_context(http_server(200, site.ca.issue("portal", days=90)))
    key_file, record = site.arc_key("arc")
    zone = site.zone({"corp.test": {"MX": [f"10 {mx}"]},
                      "inbound-smtp.eu-west-1.amazonaws.com": {"A": ["203.0.113.25"]},
                      "mail.corp-old.test": {"A": ["198.51.100.7"]},
                      "mailmoat._domainkey.gw.test": {"TXT": [record]}})
    # Without --gateway-host: the SES inbound endpoint of the region is what MX must name.
    result = site.doctor(_aws_env(site, mailbox, portal, key_file), "--dns-zone", str(zone), gateway=None)
    assert result.returncode == code, result.stdout + result.stderr
    assert "mailmoat doctor (aws):" in result.stdout
    skipped = {line.split()[1] for line in lines(result, "SKIP")}
    assert skipped == {"clamd", "libmagic", "certificate", "disk"}, result.stdout
    assert any(line.split()[1] == "arc-key" for line in lines(result, "OK")), result.stdout
    assert any(line.split()[1] == "delivery" for line in lines(result, "OK")), result.stdout
    assert {line.split()[1] for line in lines(result, "FAIL")} == (set() if code == 0 else {"mx"})
