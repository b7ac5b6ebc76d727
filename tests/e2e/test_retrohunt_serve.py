"""Retro-hunt through `mailmoat serve` (issue 17 acceptance, item 2): a file isolated and
downloaded through the running gateway turns danger when a new rule arrives; `mailmoat
retrohunt` (by hand, against the same data directory) takes its download away and tells the
recipient who took it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.adapters.test_clamd import clamd as clamd  # the module's real clamd fixture
from tests.conftest import DEMO_CONFIG, free_port
from tests.e2e.test_ppap_serve import Serve, _text, running_serve

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = b"WScript.Echo('retro-hunt serve payload')\r\n"
RULE = """rule retrohunt_serve_payload {
  meta:
    verdict = "danger"
  strings:
    $a = "retro-hunt serve payload"
  condition:
    $a
}
"""


@pytest.fixture
def env(tmp_path: Path, clamd: str) -> dict[str, str]:
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps({"sender.example": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]}}))
    (tmp_path / "rules").mkdir()
    portal_port = free_port()
    return {**os.environ, "MAILMOAT_DATA_DIR": str(tmp_path / "var"),
            "MAILMOAT_CONFIG": str(DEMO_CONFIG), "MAILMOAT_MODE": "test",
            "MAILMOAT_WORKERS": "1", "MAILMOAT_SMTP_PORT": str(free_port()),
            "MAILMOAT_PORTAL_PORT": str(portal_port),
            "MAILMOAT_PORTAL_URL": f"http://127.0.0.1:{portal_port}",
            "MAILMOAT_DNS_ZONE": str(zone), "MAILMOAT_CLAMD_SOCKET": clamd,
            "MAILMOAT_YARA_RULES_DIR": str(tmp_path / "rules"),
            "MAILMOAT_YARA_RELOAD_CHECK_SECONDS": "0"}


@pytest.fixture
def serve(tmp_path: Path, env: dict[str, str]) -> Iterator[Serve]:
    yield from running_serve(tmp_path, env)


def _mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@sender.example"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "作業用スクリプト"
    msg["Message-ID"] = "<retro-serve@sender.example>"
    msg.set_content("スクリプトを送ります。\n")
    msg.add_attachment(PAYLOAD, maintype="application", subtype="javascript", filename="tool.js")
    return msg.as_bytes(policy=policy.SMTP)


@pytest.mark.clamd
@pytest.mark.timeout(300)
def test_a_downloaded_file_that_a_new_rule_calls_danger(serve: Serve, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    serve.send(_mail())
    (first,) = serve.delivered(1)
    link = re.search(rf"http://127\.0\.0\.1:{serve.portal}(/m/[A-Za-z0-9_-]+)", _text(first))
    assert link, _text(first)
    base = link.group(1)
    page = serve.get(base)
    path = re.search(r'action="/m/[^/]+/f/([^/]+)/download"', page).group(1)  # type: ignore[union-attr]
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    fields = {"csrf": csrf, "kind": "original", "confirm": "1"}
    assert serve.post(f"{base}/f/{path}/download", fields) == (200, PAYLOAD)

    (tmp_path / "rules" / "retro.yar").write_text(RULE)  # the operator adds a rule
    done = subprocess.run([sys.executable, "-m", "mailmoat.local.cli", "retrohunt", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [t["filename"] for t in report["turned"]] == ["tool.js"], report

    status, body = serve.post(f"{base}/f/{path}/download", fields)
    assert status in (403, 404) and PAYLOAD not in body  # its download is gone
    assert not [p for p in (serve.data / "blobs" / "isolated").rglob("*")
                if p.is_file() and p.read_bytes() == PAYLOAD]
    notices = [m for m in serve.delivered(2) if b"retro-serve@sender.example" not in m]
    assert notices, "the recipient who downloaded it got no notice"
    notice = message_from_bytes(notices[-1], policy=policy.default)
    assert notice["To"] == "alice@example.test"
    assert "tool.js" in _text(notices[-1]) and "/m/" not in _text(notices[-1])
