"""Terminal escapes never reach the operator (issue 19, item 8). An audit entry, a log row or a
report field holds what unauthenticated input put there; the CLI writes its control characters
as visible escapes (mailmoat.terminal), and `process --json` stays valid JSON with the same
values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from mailmoat.admin.audit import AuditEntry
from mailmoat.bootstrap import bootstrap
from tests.conftest import DEMO_CONFIG, FIXTURES, ROOT, make_settings

# Window title, clear screen, cursor up + erase line, a one-byte C1 CSI, carriage return, and a
# right-to-left override: each would change what the operator sees.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[1A\x1b[2K\x9b31m\rfake line \u202egnp.exe"
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILMOAT_CONFIG": str(DEMO_CONFIG), "MAILMOAT_DATA_DIR": str(data_dir),
           "MAILMOAT_DNS_ZONE": str(FIXTURES / "empty-zone.json")}
    return subprocess.run([sys.executable, "-m", "mailmoat.local.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def test_admin_audit_prints_hostile_entries_escaped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    runtime = bootstrap(settings)
    audit = runtime.services.admin.audit
    assert audit is not None
    audit.record(AuditEntry(at=datetime.now(UTC), admin=f"x{HOSTILE}@attacker.example",
                            tenant="example.test", action="admin.login.invalid", target=HOSTILE,
                            client_ip="192.0.2.7", detail=HOSTILE))
    result = _cli("admin", "audit", data_dir=settings.data_dir)
    assert result.returncode == 0, result.stderr
    assert "admin.login.invalid" in result.stdout
    assert not RAW_CONTROL.search(result.stdout), repr(result.stdout)
    assert "\\u001b]0;pwned\\u0007" in result.stdout  # shown, not obeyed


def test_message_log_and_json_report_escape_a_hostile_subject(tmp_path: Path) -> None:
    eml = tmp_path / "hostile.eml"
    subject = "=?utf-8?b?" + __import__("base64").b64encode(HOSTILE.encode()).decode() + "?="
    eml.write_bytes((f"From: a@sender.example\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
                     "Message-ID: <t1@sender.example>\r\n\r\nhello\r\n").encode())
    data_dir = tmp_path / "var"
    report = _cli("process", str(eml), "--json", data_dir=data_dir)
    assert report.returncode == 0, report.stderr
    assert not RAW_CONTROL.search(report.stdout), repr(report.stdout)
    shown = json.loads(report.stdout)["subject"]  # valid JSON, and the value is what was sent
    assert shown.startswith("\x1b]0;pwned\x07\x1b[2J") and shown.endswith("\u202egnp.exe")

    text = _cli("process", str(eml), data_dir=data_dir)
    assert text.returncode == 0 and not RAW_CONTROL.search(text.stdout + text.stderr)


def test_csv_export_to_a_file_stays_data(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = {**os.environ, "MAILMOAT_CONFIG": str(DEMO_CONFIG), "MAILMOAT_DATA_DIR": str(settings.data_dir)}
    result = subprocess.run([sys.executable, "-m", "mailmoat.local.cli", "users", "export"], cwd=ROOT,
                            env=env, capture_output=True, timeout=120)
    assert result.returncode == 0
    assert result.stdout.startswith(b"address,") and b"\r\n" in result.stdout  # CSV line ends kept
