"""Builders for the spam tests: a tenant with the three kinds of recipient, zone files, messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig
from mailmoat.runtime import Runtime
from tests.conftest import make_settings

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

LISTED_IP = "81.2.69.160"  # a public address the test zone lists
CLEAN_IP = "81.2.69.161"
# sender.example's SPF passes for the listed address: an allow-list trusts only a sender some
# check vouched for (policy.authenticated_senders).
SENDER_SPF_PASS = {"sender.example": {"TXT": [f"v=spf1 ip4:{LISTED_IP} -all"]}}
IP_ZONE = "bl.test"
DOMAIN_ZONE = "dbl.test"
SPAM_DOMAIN = "spam-shop.example"

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def ip_query(ip: str, zone: str = IP_ZONE) -> str:
    return ".".join(reversed(ip.split("."))) + "." + zone


def zone(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The connecting IP LISTED_IP is on bl.test (127.0.0.2), SPAM_DOMAIN on dbl.test."""
    data: dict[str, Any] = {
        ip_query(LISTED_IP): {"A": ["127.0.0.2"], "TXT": ["listed for testing"]},
        f"{SPAM_DOMAIN}.{DOMAIN_ZONE}": {"A": ["127.0.1.2"]},
    }
    data.update(extra or {})
    return data


def write_zone(tmp_path: Path, extra: dict[str, Any] | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "zone.json"
    path.write_text(json.dumps(zone(extra)), encoding="utf-8")
    return path


def tenant_config(action: str = "quarantine", prefix: str = "", language: str = "en",
                  allowed: list[str] | None = None, retention_days: int = 30) -> GatewayConfig:
    return GatewayConfig.model_validate({"tenant": [{
        "name": "example.test", "domains": ["example.test"], "language": language,
        "spam_action": action, "spam_subject_prefix": prefix, "retention_days": retention_days,
        "allowed_senders": allowed or [],
        "users": [{"address": "alice@example.test"}, {"address": "bob@example.test"},
                  {"address": "carol@example.test", "spam_filter": False}]}]})


def spam_runtime(tmp_path: Path, config: GatewayConfig | None = None, *,
                 zone_extra: dict[str, Any] | None = None, **overrides: Any) -> Runtime:
    values: dict[str, Any] = {"dns_zone": write_zone(tmp_path, zone_extra),
                              "dnsbl_ip_zones": [IP_ZONE], "dnsbl_domain_zones": [DOMAIN_ZONE]}
    values.update(overrides)
    settings = make_settings(tmp_path, **values)
    return bootstrap(settings, config=config or tenant_config())


def message(subject: str = "Cheap watches", body: str = "Buy now.\n",
            sender: str = "promo@sender.example", extra_headers: str = "") -> bytes:
    return (f"From: Promo <{sender}>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@sender.example>\r\n"
            f"{extra_headers}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body.replace("\n", "\r\n")).encode("utf-8")
