"""Archive acceptance (issue 9) on the real local gateway: SMTP in on loopback → pipeline →
the byte-identical original in the archive directory and a journal copy in the archive mailbox."""

from __future__ import annotations

import email
import smtplib
from email import policy
from pathlib import Path

import pytest

from mailmoat.archive import attached_original
from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig, load_config
from mailmoat.local.server import Gateway
from tests.conftest import DEMO_CONFIG, free_port, make_settings
from tests.unit.isolation.builders import message

JOURNAL = "journal@archive.example"


@pytest.fixture
def gateway(tmp_path: Path):
    base = load_config(DEMO_CONFIG).tenants[0]
    config = GatewayConfig(tenant=[base.model_copy(update={
        "archive": True, "archive_journal_address": JOURNAL})])
    gw = Gateway(bootstrap(make_settings(tmp_path, smtp_port=free_port()), config=config))
    gw.start()
    yield gw
    gw.stop()


def test_isolated_message_is_archived_byte_identical_and_journalled(gateway) -> None:
    sent = message(("請求書.exe", b"MZ\x90\x00" + b"\x00" * 200, "application/octet-stream"),
                   subject="請求書の送付").replace(b"\n", b"\r\n")  # SMTP speaks CRLF
    with smtplib.SMTP("127.0.0.1", gateway.runtime.settings.smtp_port, timeout=60) as smtp:
        smtp.sendmail("sender@sender.example", ["alice@example.test", "bob@example.test"], sent)
    assert gateway.worker.drain()
    services = gateway.runtime.services
    (record,) = services.log.recent()
    assert record.state == "delivered" and "isolate" in record.report["actions"]
    stored = services.blobs.get(f"raw/{record.id}")  # what SMTP handed over, plus our Received
    assert stored.endswith(sent)

    data_dir = gateway.runtime.settings.data_dir
    (archived,) = [p for p in (data_dir / "archive").rglob("*.eml")]
    assert archived.relative_to(data_dir / "archive").parts[3] == "example.test"
    assert archived.read_bytes() == stored  # byte for byte, although alice got no .exe
    delivered = next((data_dir / "maildir" / "example.test" / "alice" / "new").iterdir()).read_bytes()
    assert b"TVqQAA" not in delivered and b"TVqQAA" in stored  # the exe's base64 start

    (journal,) = list((data_dir / "maildir" / "archive.example" / "journal" / "new").iterdir())
    data = journal.read_bytes()
    assert attached_original(data) == stored.replace(b"\r\n", b"\n")  # Maildir keeps LF line ends
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert parsed["X-Mailmoat-Journal"] == record.id
    assert services.log.delivery_outcome(record.id, f"journal:{JOURNAL}").startswith("delivered")
    assert {"archive", "journal"} <= set(record.report["actions"])
