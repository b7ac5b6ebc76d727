"""Spam end to end on the real local gateway: SMTP in on loopback → pipeline → Maildir, with the
verdict from a DNS blocklist zone or from a real rspamd; the digest and its link release."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig
from mailmoat.local.server import Gateway
from mailmoat.spam import digest
from mailmoat_web.app import create_app
from tests.conftest import ROOT, free_port, make_settings
from tests.unit.spam.helpers import (
    DOMAIN_ZONE,
    GTUBE,
    SPAM_DOMAIN,
    message,
    tenant_config,
    write_zone,
)
from tests.webforms import form_csrf

LINK = re.compile(r"https?://\S+/s/([A-Za-z0-9_.\-]+)")
SPAMMY_BODY = f"Great offer!\nhttps://www.{SPAM_DOMAIN}/buy\n"  # on the test domain blocklist


def start_gateway(tmp_path: Path, config: GatewayConfig, **overrides: Any) -> Gateway:
    values: dict[str, Any] = {"smtp_port": free_port(), "dns_zone": write_zone(tmp_path),
                              "dnsbl_domain_zones": [DOMAIN_ZONE]}
    values.update(overrides)
    gateway = Gateway(bootstrap(make_settings(tmp_path, **values), config=config))
    gateway.start()
    return gateway


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.stop()


def send(gateway: Gateway, raw: bytes, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.runtime.settings.smtp_port, timeout=60) as smtp:
        smtp.sendmail("promo@sender.example", rcpts, raw)
    assert gateway.worker is not None and gateway.worker.drain()


def inbox(gateway: Gateway, address: str) -> list[email.message.Message]:
    local, _, domain = address.partition("@")
    box = gateway.runtime.settings.data_dir / "maildir" / domain / local / "new"
    files = sorted(box.iterdir(), key=lambda p: p.stat().st_mtime) if box.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]


def test_quarantine_hold_digest_link_release(tmp_path: Path, gateways: list[Gateway]) -> None:
    gateway = start_gateway(tmp_path, tenant_config(action="quarantine"))
    gateways.append(gateway)
    send(gateway, message(body=SPAMMY_BODY), ["alice@example.test", "carol@example.test"])
    assert inbox(gateway, "alice@example.test") == []  # held
    (untouched,) = inbox(gateway, "carol@example.test")  # filter off: delivered as if ham
    assert untouched["X-Spam-Flag"] is None and untouched["Subject"] == "Cheap watches"
    (record,) = gateway.runtime.services.log.recent()
    assert record.state == "delivered" and record.report is not None
    assert record.report["spam"]["verdict"] == "spam"
    assert record.report["spam"]["sources"] == [f"uribl:{DOMAIN_ZONE}"]
    assert record.report["deliveries"]["alice@example.test"] == "quarantined: spam"

    # The daily digest (what `mailmoat spam digest` and the AWS schedule call).
    run = digest.send_digests(gateway.runtime.services)
    assert run.sent == {"alice@example.test": 1}
    (digest_mail,) = inbox(gateway, "alice@example.test")
    text = digest_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    release_token = LINK.findall(text)[0]

    client = TestClient(create_app(gateway.runtime, sweep_every=None))
    page = client.get(f"/s/{release_token}")
    assert page.status_code == 200  # a scanner's GET: nothing moves
    assert len(inbox(gateway, "alice@example.test")) == 1
    response = client.post(f"/s/{release_token}", data={"csrf": form_csrf(page.text)})
    assert response.status_code == 200
    released = inbox(gateway, "alice@example.test")[1]
    # Its original headers, and ours from when it was held (the held copy, byte for byte).
    assert released["Subject"] == "Cheap watches"
    assert released["Message-ID"] == "<m1@sender.example>"
    assert released["From"] == "Promo <promo@sender.example>"
    assert released["X-Spam-Flag"] == "YES" and released["ARC-Seal"] is not None
    held = gateway.runtime.services.blobs.get(f"spamq/{record.id}/alice@example.test")
    (maildir_file,) = [p for p in (gateway.runtime.settings.data_dir / "maildir" / "example.test"
                                   / "alice" / "new").iterdir() if p.name.startswith(record.id)]
    assert maildir_file.read_bytes().split(b"\n", 2)[2] == held.replace(b"\r\n", b"\n")
    after = gateway.runtime.services.log.get(record.id)
    assert after is not None and after.report is not None
    assert after.report["deliveries"]["alice@example.test"].startswith("delivered")


def test_tag_adds_the_flag_and_the_filter_off_recipient_gets_it_untouched(
        tmp_path: Path, gateways: list[Gateway]) -> None:
    gateway = start_gateway(tmp_path, tenant_config(action="tag", prefix="[SPAM] "))
    gateways.append(gateway)
    send(gateway, message(body=SPAMMY_BODY), ["alice@example.test", "carol@example.test"])
    (tagged,) = inbox(gateway, "alice@example.test")
    assert tagged["X-Spam-Flag"] == "YES" and tagged["Subject"] == "[SPAM] Cheap watches"
    (untouched,) = inbox(gateway, "carol@example.test")
    assert untouched["X-Spam-Flag"] is None and untouched["Subject"] == "Cheap watches"
    (record,) = gateway.runtime.services.log.recent()
    assert record.state == "delivered" and record.report is not None
    assert record.report["spam"]["action"] == "tag"


def test_every_recipient_held_is_quarantined_in_the_log(tmp_path: Path,
                                                        gateways: list[Gateway]) -> None:
    gateway = start_gateway(tmp_path, tenant_config(action="quarantine"))
    gateways.append(gateway)
    send(gateway, message(body=SPAMMY_BODY), ["alice@example.test", "bob@example.test"])
    (record,) = gateway.runtime.services.log.recent()
    assert record.state == "quarantined"
    store = gateway.runtime.services.spam
    assert store is not None
    assert sorted(h.recipient for h in store.held()) == ["alice@example.test", "bob@example.test"]


@pytest.mark.slow
def test_real_rspamd_verdict_holds_the_message(tmp_path: Path, gateways: list[Gateway],
                                               rspamd_url: str) -> None:
    gateway = start_gateway(tmp_path, tenant_config(action="quarantine"), rspamd_url=rspamd_url,
                            dnsbl_domain_zones=[])
    gateways.append(gateway)
    send(gateway, message(body=f"{GTUBE}\n"), ["alice@example.test"])
    send(gateway, message(subject="Lunch", body="See you at noon.\n"), ["alice@example.test"])
    (delivered,) = inbox(gateway, "alice@example.test")
    assert delivered["Subject"] == "Lunch" and delivered["X-Spam-Flag"] is None
    states = {r.subject: r for r in gateway.runtime.services.log.recent()}
    assert states["Cheap watches"].state == "quarantined"
    report = states["Cheap watches"].report
    assert report is not None and report["spam"]["sources"] == ["rspamd"]
    assert report["spam"]["score"] >= 15
    assert states["Lunch"].report is not None and states["Lunch"].report["spam"]["verdict"] == "ham"


def test_process_json_shows_the_spam_verdict(tmp_path: Path) -> None:
    eml = tmp_path / "spam.eml"
    eml.write_bytes(message(body=SPAMMY_BODY))
    config = tmp_path / "tenant.toml"
    config.write_text('[[tenant]]\nname = "example.test"\ndomains = ["example.test"]\n'
                      'spam_action = "quarantine"\n', encoding="utf-8")
    env = {**os.environ, "MAILMOAT_DNSBL_DOMAIN_ZONES": DOMAIN_ZONE}
    result = subprocess.run(
        [sys.executable, "-m", "mailmoat.local.cli", "process", str(eml), "--config", str(config),
         "--dns-zone", str(write_zone(tmp_path)), "--rcpt", "alice@example.test", "--json"],
        cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["spam"]["verdict"] == "spam" and report["spam"]["action"] == "quarantine"
    assert report["spam"]["sources"] == [f"uribl:{DOMAIN_ZONE}"]
    assert report["disposition"] == "quarantine"


def test_spam_cli_list_release_digest(tmp_path: Path, gateways: list[Gateway]) -> None:
    gateway = start_gateway(tmp_path, tenant_config(action="quarantine"))
    gateways.append(gateway)
    send(gateway, message(body=SPAMMY_BODY), ["alice@example.test", "bob@example.test"])
    (record,) = gateway.runtime.services.log.recent()
    data_dir = str(gateway.runtime.settings.data_dir)
    config = tmp_path / "tenant.toml"
    config.write_text('[[tenant]]\nname = "example.test"\ndomains = ["example.test"]\n'
                      'language = "en"\nspam_action = "quarantine"\n', encoding="utf-8")

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "MAILMOAT_DATA_DIR": data_dir, "MAILMOAT_CONFIG": str(config),
               "MAILMOAT_DNS_ZONE": str(gateway.runtime.settings.dns_zone)}
        return subprocess.run([sys.executable, "-m", "mailmoat.local.cli", *args], cwd=ROOT,
                              env=env, capture_output=True, timeout=120)

    listed = cli("spam", "list", "--json")
    assert listed.returncode == 0, listed.stderr.decode()
    assert sorted(h["recipient"] for h in json.loads(listed.stdout)) == [
        "alice@example.test", "bob@example.test"]
    released = cli("spam", "release", record.id, "--recipient", "bob@example.test")
    assert released.returncode == 0, released.stderr.decode()
    assert b"released" in released.stdout
    (bob_mail,) = inbox(gateway, "bob@example.test")
    assert bob_mail["Subject"] == "Cheap watches"
    digest_run = cli("spam", "digest")
    assert digest_run.returncode == 0, digest_run.stderr.decode()
    assert b"digest sent to alice@example.test: 1 message(s)" in digest_run.stdout
    assert len(inbox(gateway, "alice@example.test")) == 1 and len(inbox(gateway, "bob@example.test")) == 1
