"""`mailmoat serve` with worker processes: the SMTP process accepts and stores, N processes run
the stages; every message ends final and lands exactly once, also when a worker is killed."""

from __future__ import annotations

import os
import signal
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.local.server import Gateway
from mailmoat.local.workers import configured_workers, partition
from tests.conftest import free_port, make_settings

RCPT = "alice@example.test"


def _message(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"s{n}@sender.example"
    msg["To"] = RCPT
    msg["Subject"] = f"worker test {n}"
    msg["Message-ID"] = f"<w{n}@sender.example>"
    msg.set_content(f"message {n}\nhttp://link.example/{n}\n")
    if n % 3 == 0:
        msg.add_attachment(b"MZ" + bytes(100), maintype="application", subtype="octet-stream",
                           filename=f"tool{n}.exe")
    return msg.as_bytes()


def _send(port: int, numbers: range) -> list[str]:
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for n in numbers:
            smtp.sendmail(f"s{n}@sender.example", [RCPT], _message(n))
            ids.append(n)
    return [str(i) for i in ids]


def _wait_final(gateway: Gateway, count: int, timeout: float = 90.0) -> None:
    log = gateway.runtime.services.log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = log.recent(limit=1000)
        if len(rows) >= count and not log.unfinished():
            return
        time.sleep(0.1)
    raise AssertionError(f"not final: {[(r.id, r.state) for r in log.unfinished()][:5]}")


def _copies(data_dir: Path) -> dict[str, int]:
    local, _, domain = RCPT.partition("@")
    box = data_dir / "maildir" / domain / local / "new"
    out: dict[str, int] = {}
    for path in box.iterdir():
        gid = path.name.split(".", 1)[0]
        out[gid] = out.get(gid, 0) + 1
    return out


@pytest.fixture
def pool_gateway(tmp_path):
    settings = make_settings(tmp_path, smtp_port=free_port())
    gw = Gateway(bootstrap(settings), workers=2)
    gw.start()
    yield gw
    gw.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_worker_processes_deliver_every_message_once(pool_gateway) -> None:
    gw = pool_gateway
    assert gw.pool is not None and len(gw.pool.pids()) == 2
    assert all(pid != os.getpid() for pid in gw.pool.pids())
    _send(gw.runtime.settings.smtp_port, range(30))
    _wait_final(gw, 30)
    rows = gw.runtime.services.log.recent(limit=1000)
    assert {r.state for r in rows} <= {"delivered"}, {(r.id, r.state, r.error) for r in rows}
    copies = _copies(gw.runtime.settings.data_dir)
    assert copies == {r.id: 1 for r in rows}
    # Both partitions had mail, and none of it ran in the SMTP process.
    assert {partition(r.id, 2) for r in rows} == {0, 1}
    assert gw.runtime.inbox is not None and gw.runtime.inbox.waiting() == 0
    assert gw.worker is not None and gw.worker.processed == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_worker_is_restarted_and_its_messages_resume(pool_gateway) -> None:
    gw = pool_gateway
    assert gw.pool is not None
    port = gw.runtime.settings.smtp_port
    _send(port, range(10))
    victim = gw.pool.pids()[0]
    os.kill(victim, signal.SIGKILL)  # a worker this test's gateway started, by pid
    _send(port, range(10, 30))  # mail keeps coming while it is restarted
    deadline = time.monotonic() + 60
    while gw.pool.started < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.pool.started == 3 and victim not in gw.pool.pids()
    _wait_final(gw, 30)
    rows = gw.runtime.services.log.recent(limit=1000)
    assert len(rows) == 30
    assert {r.state for r in rows} <= {"delivered"}, {(r.id, r.state, r.error) for r in rows}
    assert _copies(gw.runtime.settings.data_dir) == {r.id: 1 for r in rows}


def test_workers_default_to_the_core_count(monkeypatch) -> None:
    assert configured_workers({}) == max(1, os.cpu_count() or 1)
    assert configured_workers({"MAILMOAT_WORKERS": "1"}) == 1
    assert configured_workers({"MAILMOAT_WORKERS": " 3 "}) == 3
    for bad in ("0", "-1", "two", "65"):
        with pytest.raises(ValueError, match="MAILMOAT_WORKERS"):
            configured_workers({"MAILMOAT_WORKERS": bad})


def test_a_tenant_share_goes_to_the_worker_of_its_message() -> None:
    ids = [f"20261202T070000Z-{n:016x}" for n in range(200)]
    assert {partition(i, 2) for i in ids} == {0, 1}
    for i in ids:
        assert partition(f"{i}.1", 2) == partition(f"{i}.2", 2) == partition(i, 2)
        assert partition(i, 1) == 0
